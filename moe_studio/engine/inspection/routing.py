"""Route any text through a pretrained checkpoint: the custom probe of an inspection run
(the Routing view's Route button) and the probe passages an inspection records.

The model is loaded again from the folder the run's meta names, with the run's
``trust_remote_code`` and dtype (safetensors only, as the inspection loaded it), and the
text goes through the model's own tokenizer; every byte of the text carries the routing
of the model token it belongs to, as in the recorded ``routing/probe`` snapshot.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...data import CUSTOM_PROBE_NAME
from ..device import resolve_device
from .capture import RouterCapture
from .families import Family, find_routers
from .loading import (InspectError, check_family, check_weights, load_model, plan_memory,
                      read_config, refuse_if_too_big)
from .options import KIND
from .text import byte_owners, token_starts


def forward(model, family: Family, ids: torch.Tensor) -> None:
    """The model's own forward over ``ids`` [B, S] (the encoder only for an
    encoder-decoder family, the text sub-model where the family names one; one position
    of LM logits, the rest is not needed)."""
    if family.encoder_only:
        model.get_encoder()(input_ids=ids)
    else:
        runner = getattr(model, family.text_model) if family.text_model else model
        runner(input_ids=ids, use_cache=False, logits_to_keep=1)


@torch.no_grad()
def route_bytes(model, tokenizer, family: Family, capture: RouterCapture, top_k: int,
                device: torch.device, text: str, domain: int = 0) -> dict[str, np.ndarray]:
    """The arrays of a ``routing/probe`` snapshot for ``text`` (docs/CONTRACTS.md),
    every byte carrying the routing of its model token, plus ``token_start`` uint8 and
    ``model_token`` int32 [n_bytes] and ``_exact`` (the tokenizer gave offsets)."""
    ids, owner, exact = byte_owners(tokenizer, text)
    if not ids:
        raise ValueError("the text gives no tokens")
    # The hooks may be shared with an inspection's statistics: take() empties them.
    forward(model, family, torch.tensor([ids], dtype=torch.long, device=device))
    routed = capture.take()
    k = top_k
    idx = torch.stack([r.topk_idx for r in routed]).cpu().numpy()        # [L, T, k]
    w = torch.stack([r.topk_weight for r in routed]).float().cpu().numpy()
    p = torch.stack([r.probs for r in routed]).float().cpu().numpy()    # [L, T, E]
    # each token's experts in decreasing weight, as the trainer stores them
    order = np.argsort(-w, axis=-1, kind="stable")
    idx = np.take_along_axis(idx, order, -1)
    w = np.take_along_axis(w, order, -1)
    data = np.frombuffer(text.encode("utf-8"), dtype=np.uint8).copy()
    return {"tokens": data, "domains": np.full(data.size, domain, dtype=np.int16),
            "topk_idx": idx[:, owner].astype(np.int16).reshape(len(routed), -1, k),
            "topk_weight": w[:, owner].astype(np.float16).reshape(len(routed), -1, k),
            "probs": p[:, owner].astype(np.float16),
            "token_start": token_starts(owner), "model_token": owner.astype(np.int32),
            "_exact": np.asarray([exact])}


def pretrained_source(run_dir: str | Path) -> dict[str, Any] | None:
    """What an inspection run routed: ``{"path", "trust_remote_code", "dtype", "device",
    "domain_names", "name"}``, or None for a run that is not an inspection (or cannot be
    read). Reads the run's meta and config only (no torch work)."""
    from ...store import RunFileError, open_run
    try:
        with open_run(run_dir) as r:
            meta, cfg = dict(r.meta), dict(r.config)
    except (RunFileError, OSError):
        return None
    if meta.get("kind") != KIND or not meta.get("model_path"):
        return None
    opts = cfg.get("inspect") or {}
    return {"path": str(meta["model_path"]), "trust_remote_code": bool(opts.get("trust_remote_code")),
            "dtype": str(meta.get("dtype") or opts.get("dtype") or "fp32"),
            "device": str(opts.get("device") or "auto"),
            "domain_names": [str(n) for n in meta.get("domain_names") or []],
            "name": Path(str(meta["model_path"])).name}


def probe_snapshot(run_dir: str | Path, text: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Route ``text`` through the checkpoint an inspection run inspected: ``(arrays,
    meta)`` as :func:`moe_studio.engine.probe.probe_snapshot` returns them (every byte
    labelled with the "custom" domain after the run's own). ValueError (one line) when
    the run is not an inspection, its model folder is gone or cannot be loaded."""
    src = pretrained_source(run_dir)
    if src is None:
        raise ValueError(f"{Path(run_dir).name}: not an inspection run")
    from ..probe import encode_probe_text
    # the training probe's cap on length (bytes), cut at a character boundary
    text = encode_probe_text(text).tobytes().decode("utf-8")
    folder = Path(src["path"])
    if not folder.is_dir():
        raise ValueError(f"the inspected model folder {folder} no longer exists: put it back "
                         "to route new text (the recorded probe is still shown)")
    try:
        hf_cfg = read_config(folder)
        fam = check_family(hf_cfg, folder, src["trust_remote_code"])
        check_weights(folder)
        dev = resolve_device(src["device"])
        plan = plan_memory(folder, hf_cfg, fam, dtype=src["dtype"], device=str(dev),
                           tokens_per_batch=len(text.encode("utf-8")),
                           trust_remote_code=src["trust_remote_code"])
        refuse_if_too_big(plan, folder)
        model, tokenizer = load_model(folder, fam, dtype=plan.dtype, device=str(dev),
                                      trust_remote_code=src["trust_remote_code"])
    except (InspectError, RuntimeError) as e:
        raise ValueError(str(e)) from None
    text_cfg = model.config.get_text_config()
    try:
        sites = find_routers(model, fam, text_cfg)
    except RuntimeError as e:
        raise ValueError(f"{folder.name}: {e}") from None
    if not sites:
        raise ValueError(f"{folder.name} has no MoE layers to route through")
    text = _fit_positions(tokenizer, text, int(getattr(text_cfg, "max_position_embeddings", 0) or 0))
    capture = RouterCapture(sites, fam)
    try:
        names = src["domain_names"]
        custom = CUSTOM_PROBE_NAME if CUSTOM_PROBE_NAME not in names else f"{CUSTOM_PROBE_NAME} probe"
        arrays = route_bytes(model, tokenizer, fam, capture, sites[0].top_k, dev, text,
                             domain=len(names))
    finally:
        capture.remove()
    exact = bool(arrays.pop("_exact")[0])
    meta = {"domain_names": names + [custom], "moe_blocks": [s.layer for s in sites],
            "top_k": int(sites[0].top_k), "n_experts": int(sites[0].n_experts), "step": -1,
            "source": f"pretrained {fam.title} {folder.name}", "member": 0,
            "tokenization": "model tokens; each byte shows the routing of the token it belongs to"
                            + ("" if exact else " (no offsets: tokens spread evenly over the bytes)")}
    return arrays, meta


def _fit_positions(tokenizer, text: str, max_positions: int) -> str:
    """``text`` cut before the first model token past the model's position limit (a
    text longer than the model can attend over in one forward)."""
    if max_positions <= 1:
        return text
    ids, owner, _exact = byte_owners(tokenizer, text)
    if len(ids) <= max_positions:
        return text
    cut = int(np.argmax(owner >= max_positions))
    return text.encode("utf-8")[:cut].decode("utf-8", errors="ignore")
