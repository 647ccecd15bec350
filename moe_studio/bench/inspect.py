"""``moe-studio bench inspect``: what recording an inspection costs over a plain forward.

A small random-weight Mixtral-style checkpoint (8 experts, top-2, 4 layers, hidden 256;
``quick``: the tests' tiny one) is saved with a tokenizer trained on the embedded corpus,
then loaded twice: once into an :class:`Inspector` (router hooks, routing statistics,
store writes, the probe at step 1, headroom on step 1 and every 10th) and once plainly
with transformers. Both run the same batches in interleaved rounds of 10 (plain, inspect,
plain, ...), so a noisy machine slows both alike, and every inspect round holds one
headroom step; the median round gives tokens per second. Budget: recording costs at most
10 % (tokens/s of inspection >= 0.9 x plain). One torch thread, the CPU.
"""
from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

BUDGET = 0.10
ROUND = 10


def run(json_out: bool = False, quick: bool = False) -> dict:
    import torch

    from ..data import read_domains
    from ..engine.inspection import InspectOptions
    from ..engine.inspection import tiny
    from ..engine.inspection.inspector import Inspector
    from ..engine.inspection.loading import load_model
    from ._common import load_average

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    rounds = 2 if quick else 6
    size = {} if quick else dict(hidden_size=256, intermediate_size=512, num_hidden_layers=4,
                                 num_attention_heads=8, num_key_value_heads=4,
                                 num_local_experts=8)
    seq, batch = (32, 4) if quick else (128, 8)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            _, domains = read_domains("embedded")
            tok = tiny.train_tokenizer([d[:200_000].decode("utf-8", "ignore") for _, d, _ in domains])
            folder = Path(tmp) / "model"
            tiny.build("mixtral", folder, tok, seed=0, **size)
            steps = 3 + rounds * ROUND
            ins = Inspector(InspectOptions(model=str(folder), tokens=steps * seq * batch,
                                           seq_len=seq, batch_size=batch, dtype="fp32",
                                           device="cpu", precision_every=ROUND),
                            runs_dir=Path(tmp) / "runs")
            plain, _ = load_model(ins.folder, ins.family, dtype="fp32", device="cpu")
            full = [b for b in ins.batches if b.ids.shape == (batch, seq)]

            def plain_forward(i: int) -> None:
                with torch.no_grad():
                    plain(input_ids=torch.from_numpy(full[i % len(full)].ids), use_cache=False,
                          logits_to_keep=1)

            for i in range(3):                       # warm-up, and the probe at step 1
                plain_forward(i)
                ins.step()
            t_plain, t_ins = [], []
            for r in range(rounds):
                if ins.total_steps - ins.step_count < ROUND:
                    break
                t0 = time.perf_counter()
                for i in range(ROUND):
                    plain_forward(r * ROUND + i)
                t_plain.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                for _ in range(ROUND):
                    ins.step()
                t_ins.append(time.perf_counter() - t0)
            ins.close("finished" if ins.done else "stopped")
            tokens_round = ROUND * batch * seq
            plain_tps = tokens_round / statistics.median(t_plain)
            ins_tps = tokens_round / statistics.median(t_ins)
            ratios = [b / a - 1.0 for a, b in zip(t_plain, t_ins)]
            overhead = statistics.median(ratios)
            return {
                "benchmark": "inspect",
                "model": f"mixtral {ins.plan.params:,} parameters, {len(ins.blocks)} MoE layers x "
                         f"{ins.n_experts} experts top-{ins.top_k}, fp32 on the CPU",
                "tokens_per_round": tokens_round, "rounds": len(t_plain),
                "plain_tokens_per_s": round(plain_tps, 1),
                "inspect_tokens_per_s": round(ins_tps, 1),
                "overhead": round(overhead, 4), "overhead_rounds": [round(x, 4) for x in ratios],
                "budget": BUDGET, "met": bool(overhead <= BUDGET), "quick": quick,
                "torch_threads": 1, "load_average": load_average(),
            }
    finally:
        torch.set_num_threads(threads)
