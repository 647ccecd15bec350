"""``moe-studio bench time-to-quality``: training wall time of the default MoE and the
dense config to reach the validation loss that the plain-PyTorch baseline
(``bench/baseline.py``) reaches at the end of its schedule, on character-level tiny
Shakespeare (``../shared/data/tinyshakespeare.txt`` next to the checkout).

The three trainers (baseline, dense ``Trainer``, MoE ``Trainer``; recipes in the
presets ``ttq_dense`` / ``ttq_moe``) run side by side in one process, taking turns
block by block, so a shared machine slows them alike. Each trains the full schedule;
every ``eval_every`` steps all three are evaluated on the same fixed validation windows
(evaluation time is not training time and is not counted). The target is the
baseline's loss at its last step; a trainer's time to quality is its summed step time
up to the first evaluation at or under the target (None when it never gets there),
reported as a ratio to the baseline's time for the whole schedule (goal for the MoE:
<= 0.7).
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ..config import presets
from ..engine import expert_kernels, native_moe
from ._common import SPARE_STEPS, load_average
from .baseline import PlainLoop

CORPUS_NAME = "tinyshakespeare.txt"
MOE_GOAL = 0.7


def shared_corpus() -> Path:
    """``../shared/data/tinyshakespeare.txt`` beside the checkout (where the project
    keeps its public-domain corpus), else beside the working directory."""
    repo = Path(__file__).resolve().parents[2]
    for base in (repo.parent, Path.cwd().parent):
        p = base / "shared" / "data" / CORPUS_NAME
        if p.is_file():
            return p
    raise FileNotFoundError(f"time-to-quality needs ../shared/data/{CORPUS_NAME} beside the "
                            f"checkout ({repo.parent / 'shared' / 'data'}) or the working "
                            "directory; it is not there")


@torch.no_grad()
def _val_loss(model, batches, device, trainer_model: bool) -> float:
    was = model.training
    model.eval()
    nll, n = 0.0, 0
    try:
        for x_np, y_np in batches:
            x = torch.from_numpy(x_np).to(device)
            y = torch.from_numpy(y_np).to(device)
            out = model(x)
            logits = out[0] if trainer_model else out
            nll += float(F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]),
                                         y.reshape(-1), reduction="sum"))
            n += y.numel()
    finally:
        model.train(was)
    return nll / n


def _trainer_config(make, corpus: str, steps: int, warmup: int, quick: bool):
    c = make()
    c.data.corpus = corpus
    c.train.steps = steps + SPARE_STEPS   # the last step evaluates and checkpoints
    c.train.warmup_steps = warmup
    c.train.eval_every = c.train.snapshot_every = 10 ** 6
    c.train.checkpoint_every = 0
    c.train.device = "cpu" if not torch.cuda.is_available() else "auto"
    if quick:
        c.model.n_layers, c.model.d_model, c.model.d_ff = 1, 32, 64
        c.model.n_heads = 2
        c.moe.d_expert = 32
    return c


def run(json_out: bool = True, quick: bool = False, steps: int | None = None,
        corpus: str | Path | None = None) -> dict:
    from ..data import eval_windows, load_corpus
    from ..engine.trainer import Trainer

    steps = steps or (6 if quick else 2000)
    eval_every = max(1, min(100, steps // 20)) if not quick else 3
    warmup = min(100, max(1, steps // 20))
    path = Path(corpus) if corpus is not None else shared_corpus()
    data = load_corpus(str(path), context=64)
    val = eval_windows(data.val_tokens, 64, 12, 2 if quick else 64)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    load_before = load_average()
    model_kw = dict(n_layers=1, d=32, ff=64, n_heads=2) if quick else {}
    with tempfile.TemporaryDirectory() as runs:
        plain = PlainLoop(data.train_tokens, batch=12, context=64, warmup=warmup,
                          steps=steps + SPARE_STEPS, device=device, **model_kw)
        trainers = {name: Trainer(_trainer_config(make, str(path), steps, warmup, quick),
                                  runs_dir=runs)
                    for name, make in (("dense", presets.ttq_dense), ("moe", presets.ttq_moe))}
        evals = {
            "baseline": lambda: _val_loss(plain.model, val, device, False),
            "dense": lambda: _val_loss(trainers["dense"].models[0], val, device, True),
            "moe": lambda: _val_loss(trainers["moe"].models[0], val, device, True),
        }
        steppers = {"baseline": plain, **trainers}
        train_s = {k: 0.0 for k in steppers}
        curve: dict[str, list[tuple[int, float, float]]] = {k: [] for k in steppers}
        try:
            for done in range(eval_every, steps + 1, eval_every):
                for name, s in steppers.items():
                    _sync(device)
                    t0 = time.perf_counter()
                    for _ in range(eval_every):
                        s.step()
                    _sync(device)
                    train_s[name] += time.perf_counter() - t0
                    curve[name].append((done, train_s[name], evals[name]()))
                if not json_out:
                    print(f"step {done}: " + ", ".join(f"{k} {c[-1][2]:.4f} ({c[-1][1]:.0f} s)"
                                                        for k, c in curve.items()),
                          file=sys.stderr)
        finally:
            for tr in trainers.values():
                tr.close("stopped", checkpoint=False)
            info = {k: {"params_total": tr.params.total, "params_active": tr.params.active,
                        "precision": tr.precision} for k, tr in trainers.items()}
    target = curve["baseline"][-1][2]
    base_s = curve["baseline"][-1][1]

    def reach(name: str) -> dict:
        hit = next(((st, t) for st, t, v in curve[name] if v <= target), None)
        return {"step": hit[0] if hit else None, "train_s": round(hit[1], 3) if hit else None,
                "ratio_to_baseline": round(hit[1] / base_s, 3) if hit else None,
                "final_val_loss": round(curve[name][-1][2], 4),
                "total_train_s": round(curve[name][-1][1], 2)}

    results = {k: reach(k) for k in ("dense", "moe")}
    moe_ratio = results["moe"]["ratio_to_baseline"]
    out = {
        "benchmark": "time-to-quality",
        "corpus": str(path), "device": str(device), "torch": torch.__version__,
        "threads": torch.get_num_threads(), "quick": quick,
        "steps": steps, "eval_every": eval_every, "warmup_steps": warmup,
        "val_windows": len(val) * 12,
        "load_avg_1m": [(la or [None])[0] for la in (load_before, load_average())],
        "target_val_loss": round(target, 4),
        "baseline": {"train_s": round(base_s, 3), "final_val_loss": round(target, 4)},
        **results,
        "models": info,
        "expert_kernels_run": expert_kernels.kernels_run(),
        "native_routing": native_moe.report(),
        "curves": {k: [[st, round(t, 3), round(v, 4)] for st, t, v in c] for k, c in curve.items()},
        "budgets": {f"moe_time_to_quality_ratio <= {MOE_GOAL}": {
            "value": moe_ratio, "limit": MOE_GOAL,
            "verdict": "missed" if moe_ratio is None or moe_ratio > MOE_GOAL else "ok",
            "ok": moe_ratio is not None and moe_ratio <= MOE_GOAL}},
    }
    if not json_out:
        for k, v in out.items():
            if k != "curves":
                print(f"{k}: {v}")
    return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
