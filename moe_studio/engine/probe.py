"""Route any text through a recorded run's model: the "custom probe" of the Routing view.

The model is rebuilt from the run's ``config.toml`` and loaded from one of its weight
files: a training checkpoint (``checkpoint-<step>.pt``, loaded with
``weights_only=True``, member weights under ``"models"``) or the fp16
``weights.safetensors`` that sample runs ship (keys ``member{m}.<state_dict key>``).
The text's UTF-8 bytes are routed in consecutive windows of ``data.context`` tokens
in eval mode, exactly as the trainer routes its probe, and the result has the arrays
of a ``routing/probe`` snapshot (docs/CONTRACTS.md).

Heavy (builds a model): call it off the GUI thread. Importing this module is cheap:
torch is imported when a model is built, so the GUI can list checkpoints freely.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..config import ConfigError, load as load_config
from ..config.inputs import kind_of
from ..data import CUSTOM_PROBE_NAME, PROBE_MAX_TOKENS

if TYPE_CHECKING:
    import torch

    from .model import MoEGPT

WEIGHTS_NAME = "weights.safetensors"
_CKPT_RE = re.compile(r"^checkpoint-(\d+)\.pt$")


@dataclass(frozen=True)
class Checkpoint:
    """One weight file of a run: ``kind`` is "checkpoint" (``checkpoint-<step>.pt``),
    "weights" (``weights.safetensors``) or "pretrained" (the Hugging Face folder an
    inspection run routed); ``step`` the optimizer step it holds (-1 if unknown)."""
    path: Path
    step: int
    kind: str

    @property
    def label(self) -> str:
        if self.kind == "pretrained":
            return f"pretrained model {self.path.name}"
        what = "checkpoint" if self.kind == "checkpoint" else "final weights (fp16)"
        return f"{what} @ step {self.step:,}" if self.step >= 0 else what


def list_checkpoints(run_dir: str | Path) -> list[Checkpoint]:
    """The weight files of a run, oldest step first (a checkpoint before fp16 weights
    of the same step). Empty when the run has none."""
    d = Path(run_dir)
    if d.is_file():
        d = d.parent
    found: list[Checkpoint] = []
    if d.is_dir():
        for p in d.iterdir():
            m = _CKPT_RE.match(p.name)
            if m and p.is_file():
                found.append(Checkpoint(p, int(m.group(1)), "checkpoint"))
        w = d / WEIGHTS_NAME
        if w.is_file():
            found.append(Checkpoint(w, _safetensors_step(w), "weights"))
    return sorted(found, key=lambda c: (c.step, c.kind != "checkpoint", c.path.name))


def weight_sources(run_dir: str | Path) -> list[Checkpoint]:
    """What custom text can be routed through: the run's weight files, or for an
    inspection run the pretrained model folder it inspected (while that folder exists)."""
    found = list_checkpoints(run_dir)
    if not found:
        folder = _pretrained_folder(run_dir)
        if folder is not None and folder.is_dir():
            found.append(Checkpoint(folder, -1, "pretrained"))
    return found


def is_pretrained_run(run_dir: str | Path) -> bool:
    """The run is an inspection of a pretrained checkpoint (it has no weights of its own)."""
    return _pretrained_folder(run_dir) is not None


def _pretrained_folder(run_dir: str | Path) -> Path | None:
    from ..store import RunFileError, open_run
    from .inspection.options import KIND   # plain data: no torch
    try:
        with open_run(run_dir) as r:
            meta = r.meta
            path = meta.get("model_path") if meta.get("kind") == KIND else None
    except (RunFileError, OSError):
        return None
    return Path(str(path)) if path else None


def latest_checkpoint(run_dir: str | Path) -> Checkpoint | None:
    """The weights of the latest step (a full-precision checkpoint wins a tie), or None."""
    cks = list_checkpoints(run_dir)
    if not cks:
        return None
    top = max(c.step for c in cks)
    same = [c for c in cks if c.step == top]
    return next((c for c in same if c.kind == "checkpoint"), same[0])


def load_model(run_dir: str | Path, checkpoint: str | Path | Checkpoint | None = None,
               member: int = 0, device: "str | torch.device" = "cpu"
               ) -> "tuple[MoEGPT, Any, Checkpoint]":
    """``(model in eval mode, its ExperimentConfig, the Checkpoint loaded)``.

    ``checkpoint``: None = :func:`latest_checkpoint`; else a weight file (path or
    :class:`Checkpoint`). ValueError with a one-line message when the run has no
    config or no weights, or the file does not fit the config.
    """
    models, cfg, ck = load_models(run_dir, checkpoint, [member], device)
    return models[0], cfg, ck


def run_folder(run_dir: str | Path) -> Path:
    """The run folder of ``run_dir`` (a folder, or a file in it such as run.sqlite); a
    one-line ValueError when there is none."""
    run_dir = Path(run_dir)
    if run_dir.is_file():
        run_dir = run_dir.parent
    if not run_dir.is_dir():
        if run_dir.exists():
            raise ValueError(f"{run_dir}: is {kind_of(run_dir.stat().st_mode)}, not a run folder")
        raise ValueError(f"{run_dir}: run folder not found")
    return run_dir


def load_models(run_dir: str | Path, checkpoint: str | Path | Checkpoint | None = None,
                members: "list[int] | None" = None, device: "str | torch.device" = "cpu"
                ) -> "tuple[list[MoEGPT], Any, Checkpoint]":
    """:func:`load_model` for several members of an ensemble at once (the weight file
    is read once): ``members`` None = all of them, in order."""
    run_dir = run_folder(run_dir)
    cfg = run_config(run_dir)
    ck = _resolve_checkpoint(run_dir, checkpoint)
    n = cfg.ensemble.members
    members = list(range(n)) if members is None else [int(m) for m in members]
    for member in members:
        if not 0 <= member < n:
            raise ValueError(f"member {member} does not exist (the run has {n} "
                             f"member{'s' if n != 1 else ''})")
    from .model import MoEGPT

    models = []
    for state in _read_states(ck, members):
        model = MoEGPT(cfg.model, cfg.moe, context=cfg.data.context)
        _load_state(model, state, ck)
        models.append(model.to(device).eval())
    return models, cfg, ck


def run_config(run_dir: Path):
    """The run's ExperimentConfig from its ``config.toml``; ValueError (one line) if it
    cannot be read."""
    try:
        return load_config(Path(run_dir) / "config.toml")
    except ConfigError as e:
        raise ValueError(f"{Path(run_dir).name}: cannot rebuild the model: {e}") from None


def route_tokens(model: "MoEGPT", tokens: np.ndarray, context: int, precision: str = "fp32",
                 device: "str | torch.device" = "cpu") -> dict[str, np.ndarray]:
    """Route byte tokens [N] through ``model`` in windows of ``context`` tokens (each
    window attends only within itself), eval mode (the model's mode is restored
    afterwards), under the run's precision: the one routing of the trainer's probe
    snapshots and of the custom probe. Returns ``topk_idx`` int16 [n_blocks, N, k],
    ``topk_weight`` float16 [n_blocks, N, k], ``probs`` float16 [n_blocks, N, E]; empty
    for a model without MoE blocks."""
    import torch

    with torch.no_grad():
        return _route_tokens(model, tokens, context, precision, torch.device(device))


def _route_tokens(model, tokens, context, precision, dev) -> dict[str, np.ndarray]:
    import torch

    from .amp import autocast   # here: importing this module stays free of torch

    blocks = sorted(model.moe_blocks)
    if not blocks:
        return {}
    was_training = model.training
    saved = {i: model.moe_blocks[i].collect_stats for i in blocks}
    outs: dict[int, dict[str, list]] = {i: {"topk_idx": [], "topk_weight": [], "probs": []}
                                        for i in blocks}
    model.eval()
    for i in blocks:
        model.moe_blocks[i].collect_stats = True
    try:
        for s in range(0, len(tokens), context):
            chunk = torch.as_tensor(np.asarray(tokens[s:s + context], dtype=np.int64),
                                    device=dev)[None, :]
            with autocast(dev, precision):
                model(chunk)
            for i in blocks:
                last = model.moe_blocks[i].last
                k = last.topk_idx.shape[-1]
                outs[i]["topk_idx"].append(last.topk_idx.reshape(-1, k))
                outs[i]["topk_weight"].append(last.topk_weight.reshape(-1, k).float())
                outs[i]["probs"].append(last.probs.reshape(-1, last.probs.shape[-1]).float())
    finally:
        for i in blocks:
            model.moe_blocks[i].collect_stats = saved[i]
        model.train(was_training)

    def stack(key: str, dtype) -> np.ndarray:
        return torch.stack([torch.cat(outs[i][key]) for i in blocks]).cpu().numpy().astype(dtype)

    return {"topk_idx": stack("topk_idx", np.int16), "topk_weight": stack("topk_weight", np.float16),
            "probs": stack("probs", np.float16)}


def encode_probe_text(text: str, max_tokens: int = PROBE_MAX_TOKENS) -> np.ndarray:
    """The UTF-8 bytes of ``text`` (uint8 [N]), cut to ``max_tokens`` at a character
    boundary. ValueError for an empty text."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("the probe text is empty: type or paste some text to route")
    data = text.encode("utf-8", errors="replace")   # a lone surrogate from a text box: '?'
    if len(data) > max_tokens:
        cut = max_tokens
        while cut > 0 and (data[cut] & 0xC0) == 0x80:   # never inside a character
            cut -= 1
        data = data[:cut]
    return np.frombuffer(data, dtype=np.uint8).copy()


def route_text(run_dir: str | Path, text: str, *, checkpoint: str | Path | Checkpoint | None = None,
               member: int = 0, device: str = "cpu", domain_label: int | None = None
               ) -> dict[str, np.ndarray]:
    """Route ``text`` through member ``member`` of the run's model.

    Returns the arrays of a ``routing/probe`` snapshot: ``tokens`` uint8 [N] (the UTF-8
    bytes, at most ``PROBE_MAX_TOKENS``), ``domains`` uint8 [N] (every token labelled
    ``domain_label``; default: the number of the run's corpus domains, i.e. the
    "custom" probe domain of ``data.corpus``), ``topk_idx`` int16 [n_blocks, N, k],
    ``topk_weight`` float16 [n_blocks, N, k], ``probs`` float16 [n_blocks, N, E].
    ValueError (one line) for an empty text, a run without weights, a dense model.
    """
    return probe_snapshot(run_dir, text, checkpoint=checkpoint, member=member, device=device,
                          domain_label=domain_label)[0]


def probe_snapshot(run_dir: str | Path, text: str, *, checkpoint=None, member: int = 0,
                   device: str = "cpu", domain_label: int | None = None
                   ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """:func:`route_text` plus the snapshot's meta: ``domain_names`` (the run's domains
    and "custom"), ``moe_blocks``, ``top_k``, ``n_experts``, and ``step`` / ``source``
    (the step and the label of the weights used)."""
    tokens = encode_probe_text(text)
    model, cfg, ck = load_model(run_dir, checkpoint, member=member, device=device)
    blocks = sorted(model.moe_blocks)
    if not blocks:
        raise ValueError("this model has no MoE blocks: there is no routing to show")
    names = _domain_names(Path(run_dir))
    custom = CUSTOM_PROBE_NAME if CUSTOM_PROBE_NAME not in names else f"{CUSTOM_PROBE_NAME} probe"
    label = len(names) if domain_label is None else int(domain_label)
    routed = route_tokens(model, tokens, cfg.data.context, cfg.precision.mode, device)
    arrays = {"tokens": tokens, "domains": np.full(tokens.size, label, dtype=np.uint8), **routed}
    meta = {"domain_names": names + [custom], "moe_blocks": blocks,
            "top_k": int(routed["topk_idx"].shape[-1]), "n_experts": int(cfg.moe.n_experts),
            "step": ck.step, "source": ck.label, "member": member}
    return arrays, meta


# ------------------------------------------------------------------------------ internals

def _safetensors_step(path: Path) -> int:
    """The ``step`` in a safetensors file's metadata, read from its JSON header (no
    torch import: listing checkpoints must stay cheap for the GUI), or -1."""
    import json
    import struct

    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if not 0 < n < 100_000_000:
                return -1
            header = json.loads(f.read(n))
        return int((header.get("__metadata__") or {}).get("step", -1))
    except Exception:  # noqa: BLE001 - an unreadable file still lists; loading says why
        return -1


def _resolve_checkpoint(run_dir: Path, checkpoint) -> Checkpoint:
    if checkpoint is None:
        ck = latest_checkpoint(run_dir)
        if ck is None:
            raise ValueError(f"run {run_dir.name} has no weights to route through "
                             f"(no checkpoint-*.pt or {WEIGHTS_NAME} in its folder)")
        return ck
    if isinstance(checkpoint, Checkpoint):
        ck = checkpoint
    else:
        p = Path(checkpoint)
        if not p.is_absolute() and not p.exists():
            p = run_dir / p
        m = _CKPT_RE.match(p.name)
        if p.suffix == ".safetensors":
            ck = Checkpoint(p, _safetensors_step(p) if p.is_file() else -1, "weights")
        else:
            ck = Checkpoint(p, int(m.group(1)) if m else -1, "checkpoint")
    if not ck.path.is_file():
        if ck.path.exists():
            raise ValueError(f"{ck.path}: is {kind_of(ck.path.stat().st_mode)}, not a weights file")
        raise ValueError(f"weights file not found: {ck.path}")
    return ck


def _read_states(ck: Checkpoint, members: list[int]) -> "list[dict[str, torch.Tensor]]":
    """The state dicts of ``members`` from one weight file, read once."""
    if ck.kind == "weights":
        from safetensors.torch import load_file
        try:
            flat = load_file(str(ck.path), device="cpu")
        except Exception as e:  # noqa: BLE001 - a truncated or foreign file
            raise ValueError(f"{ck.path.name}: not a readable safetensors file ({e})") from None
        out = []
        for member in members:
            prefix = f"member{member}."
            state = {k[len(prefix):]: v for k, v in flat.items() if k.startswith(prefix)}
            if not state:
                raise ValueError(f"{ck.path.name}: no weights for member {member}")
            out.append(state)
        return out
    from .safe_load import load_weights_only

    blob = load_weights_only(ck.path)
    models = blob.get("models") if isinstance(blob, dict) else None
    if not isinstance(models, (list, tuple)):
        raise ValueError(f"{ck.path.name}: not a MoE Studio checkpoint (no 'models')")
    for member in members:
        if member >= len(models):
            raise ValueError(f"{ck.path.name}: has {len(models)} members, no member {member}")
    return [dict(models[m]) for m in members]


def _load_state(model: "MoEGPT", state: "dict[str, torch.Tensor]", ck: Checkpoint) -> None:
    import torch

    own = model.state_dict()
    # Tied tensors are stored once in weights.safetensors: a key is only missing when
    # no tensor sharing its storage was loaded.
    by_ptr: dict[int, list[str]] = {}
    for k, v in own.items():
        by_ptr.setdefault(v.data_ptr(), []).append(k)
    missing = [k for k in own if k not in state
               and not any(a in state for a in by_ptr[own[k].data_ptr()])]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        what = (f"missing {', '.join(missing[:3])}" if missing
                else f"unexpected {', '.join(unexpected[:3])}")
        raise ValueError(f"{ck.path.name} does not fit the run's config.toml ({what})")
    for k, v in state.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise ValueError(f"{ck.path.name}: {k} has shape {tuple(v.shape)}, the config "
                             f"builds {tuple(own[k].shape)}")
    with torch.no_grad():
        for k, v in state.items():
            own[k].copy_(v.to(own[k].dtype))
        for k in own:
            if k not in state:
                src = next(a for a in by_ptr[own[k].data_ptr()] if a in state)
                own[k].copy_(state[src].to(own[k].dtype))


def _domain_names(run_dir: Path) -> list[str]:
    try:
        from ..store import open_run
        with open_run(run_dir) as r:
            names = r.meta.get("domain_names") or []
            if not names:
                snap = r.snapshot("routing/probe")
                if snap is not None:
                    names = [n for n in snap.meta.get("domain_names", []) if n != CUSTOM_PROBE_NAME]
        return [str(n) for n in names]
    except Exception:  # noqa: BLE001 - the names are a label; routing works without them
        return []
