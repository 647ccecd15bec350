"""The one place where the engine's results become run-store records.

The trainer and the ensemble engine hand their step results here (losses, gradient
norms, routing statistics still on the device, loss-scale changes, evaluations,
probes); the recorder turns them into the records of docs/CONTRACTS.md and writes
them with the run's :class:`~moe_studio.store.RunWriter`. Per-step statistics stay
on the device in a :class:`~.stats.StatsBuffer` and reach the host in batches, one
transfer per flush. A distributed engine reduces its results across ranks before
handing them here, and only the writing rank records.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import numpy as np
import torch

from ..config import ExperimentConfig
from ..config.schema import BIASED_ROUTERS
from ..metrics.routing import load_cv, max_over_mean
from ..store import RunWriter
from .headroom import HeadroomMonitor, nonfinite_event
from .model import MoEGPT
from .stats import BLOCK_STATS, PendingStep, StatsBuffer, block_stat_vector

HIST_BINS = 50
LOSS_FIELDS = ("train/loss", "train/aux_loss", "train/z_loss", "train/total_loss", "train/grad_norm")


class Recorder:
    """Records of one run: ``writer`` is its store, ``monitors`` each member's precision
    monitor (or None), ``moe_block_ids`` the MoE blocks of the model."""

    def __init__(self, writer: RunWriter, config: ExperimentConfig, moe_block_ids: list[int],
                 monitors: list[HeadroomMonitor | None], device: torch.device):
        self.writer = writer
        self.config = config
        self.blocks = sorted(moe_block_ids)
        self.monitors = monitors
        self._stats = StatsBuffer()
        # On CUDA statistics stay on the device and are copied in batches; on the CPU a
        # "transfer" is free, so records reach the store (and the live views) every step.
        self.flush_every = 25 if device.type == "cuda" else 1
        self.last_loss = math.nan   # latest training LM loss of the member in training

    # ------------------------------------------------------------------ any record
    def scalars(self, step: int, values: Mapping[str, float], member: int = 0) -> None:
        self.writer.add_scalars(step, values, member=member)

    def tensor(self, step: int, name: str, array: np.ndarray, member: int = 0) -> None:
        """``array`` recorded as float32."""
        self.writer.add_tensor(step, name, np.asarray(array, dtype=np.float32), member=member)

    def histogram(self, step: int, name: str, edges: np.ndarray, counts: np.ndarray,
                  member: int = 0) -> None:
        self.writer.add_histogram(step, name, edges, counts, member=member)

    def snapshot(self, step: int, name: str, arrays: Mapping[str, np.ndarray],
                 meta: Mapping[str, Any], member: int = 0) -> None:
        self.writer.add_snapshot(step, name, arrays, meta, member=member)

    def event(self, step: int, kind: str, message: str, data: Mapping[str, Any] | None = None,
              member: int | None = None) -> None:
        """An event of ``member``; None: of the whole run (a checkpoint, a stage, an
        evaluation), stored with member 0 as such events always were."""
        self.writer.add_event(step, kind, message, data, member=0 if member is None else member)

    def meta(self, **kv: Any) -> None:
        self.writer.set_meta(**kv)

    def end_step(self) -> None:
        """After every step's records (a member-parallel recorder hands the other
        ranks' records to the writing rank here); one process has nothing to do."""

    def commit(self) -> None:
        """Make everything recorded so far visible to readers of the store now."""
        self.writer.flush()

    def close(self, status: str, error: str | None = None) -> None:
        self.writer.close(status, error=error)

    # ------------------------------------------------------------------ training steps
    def member_step(self, step: int, m: int, model: MoEGPT, lm_loss: torch.Tensor, aux, z,
                    total: torch.Tensor, grad_norm) -> None:
        """Member ``m``'s losses, gradient norm and routing statistics of optimizer step
        ``step`` (1-based), kept on the device until the next :meth:`flush`."""
        dev = lm_loss.device
        losses = torch.stack([lm_loss.detach().float(), torch.as_tensor(aux, device=dev).detach().float(),
                              torch.as_tensor(z, device=dev).detach().float(), total.detach().float(),
                              torch.as_tensor(grad_norm, device=dev).detach().float()])
        blocks = [model.moe_blocks[i] for i in sorted(model.moe_blocks)]
        # Steps between train.stats_every ones carry losses only.
        if blocks and self.config.train.collect_stats and all(b.last is not None for b in blocks):
            bstats = torch.stack([block_stat_vector(b.last) for b in blocks])
            tpe = torch.stack([b.last.tokens_per_expert.float() for b in blocks])
            dpe = torch.stack([b.last.dropped_per_expert.float() for b in blocks])
            dpr = (torch.stack([b.last.dropped_per_row for b in blocks])
                   if self.config.moe.capacity_factor > 0 else None)
            bias = None
            if self.config.moe.router in BIASED_ROUTERS:
                bias = torch.stack([b.router.bias.detach().float() for b in blocks])
        else:
            bstats = tpe = dpe = bias = dpr = None
        self._stats.add(self.reduce(PendingStep(step=step, member=m, losses=losses,
                                                block_stats=bstats, tokens_per_expert=tpe,
                                                dropped_per_expert=dpe, bias=bias,
                                                dropped_per_row=dpr)))

    def reduce(self, rec: PendingStep) -> PendingStep:
        """One step's statistics of the whole run (a distributed recorder combines the
        ranks' here); one process has nothing to combine."""
        return rec

    def loss_scale(self, step: int, m: int, before: float, after: float,
                   culprit: dict | None) -> None:
        """fp16: member ``m``'s loss scale after step ``step``; a fall is a skipped step,
        recorded with the module nearest the loss that went non-finite (``culprit``)."""
        if after < before:
            where = f" (nearest the loss: {culprit['module']})" if culprit else ""
            self.event(step, "loss_scale_backoff",
                       f"loss scale {before:g} -> {after:g}: inf/NaN gradient{where}, step skipped",
                       {"from": before, "to": after, **(culprit or {})}, member=m)
            self.scalars(step, {"precision/skipped": 1.0}, member=m)
        self.scalars(step, {"precision/loss_scale": after}, member=m)

    def router_histograms(self, step: int, m: int, model: MoEGPT) -> None:
        """Histograms of every MoE block's router probabilities of the last forward."""
        for i, blk in sorted(model.moe_blocks.items()):
            probs = blk.last.probs
            if probs is None:
                continue
            counts = torch.histc(probs.detach().float(), bins=HIST_BINS, min=0.0, max=1.0)
            self.histogram(step, f"router_probs/L{i}", np.linspace(0.0, 1.0, HIST_BINS + 1),
                           counts.cpu().numpy().astype(np.int64), member=m)

    def due(self, done: bool) -> bool:
        """Whether the statistics kept on the device should be flushed now."""
        return len(self._stats) >= self.flush_every or done

    def flush(self, upto: int, loss_member: Callable[[int], int]) -> None:
        """Bring the pending statistics to the host and write them, with the headroom
        records of steps up to ``upto``. ``loss_member(step)``: the member whose loss
        :attr:`last_loss` follows. Raises FloatingPointError on a non-finite value when
        ``precision.stop_on_nan`` is on (after recording it)."""
        stop_on_nan = self.config.precision.stop_on_nan
        for rec in self._stats.drain():
            step, m = rec["step"], rec["member"]
            values = {name: float(v) for name, v in zip(LOSS_FIELDS, rec["losses"])}
            if m == loss_member(step):
                self.last_loss = values["train/loss"]
            if rec.get("block_stats") is not None:
                tpe, dpe = rec["tokens_per_expert"], rec["dropped_per_expert"]
                cv, mom = load_cv(tpe), max_over_mean(tpe)
                routed = tpe.sum(axis=-1)
                for j, blk in enumerate(self.blocks):
                    for name, v in zip(BLOCK_STATS, rec["block_stats"][j]):
                        values[f"moe/L{blk}/{name}"] = float(v)
                    values[f"moe/L{blk}/dropped_frac"] = float(dpe[j].sum() / max(routed[j], 1.0))
                    values[f"moe/L{blk}/load_cv"] = float(cv[j])
                    values[f"moe/L{blk}/load_max_over_mean"] = float(mom[j])
                self.tensor(step, "moe/tokens_per_expert", tpe, member=m)
                self.tensor(step, "moe/dropped_per_expert", dpe, member=m)
                if rec.get("bias") is not None:
                    self.tensor(step, "moe/bias", rec["bias"], member=m)
                if rec.get("dropped_per_row") is not None:
                    self.tensor(step, "moe/dropped_per_row", rec["dropped_per_row"], member=m)
            self.scalars(step, values, member=m)
            # Non-finite values, attributed to the module that made them.
            bad = [k for k, v in values.items() if k.startswith("train/") and not math.isfinite(v)]
            if self.config.precision.mode == "fp16" and bad == ["train/grad_norm"]:
                bad = []  # the GradScaler skipped this step: recorded as loss_scale_backoff
            mon = self.monitors[m]
            info = mon.attribute(step) if mon is not None else None
            if bad or info:
                msg, data = nonfinite_event(step, bad, info)
                self.event(step, "nonfinite", msg, data, member=m)
                if stop_on_nan:
                    raise FloatingPointError(f"{msg} (member {m}); precision.stop_on_nan is on")
        for m, mon in enumerate(self.monitors):
            # Headroom records, and non-finite outputs on steps whose loss stayed finite.
            if mon is not None and mon.write(self.writer, member=m, upto=upto) and stop_on_nan:
                raise FloatingPointError(f"non-finite module output or gradient (member {m}), "
                                         "see the nonfinite event; precision.stop_on_nan is on")

    # ------------------------------------------------------------------ evaluation, probes
    def evaluation(self, step: int, out: Mapping[str, float]) -> None:
        """One model's validation scalars ``out`` (``val/loss`` in nats/token,
        ``val/acc``) and the ``eval`` event."""
        self.scalars(step, out, member=0)
        self.eval_event(step, out)

    def eval_event(self, step: int, out: Mapping[str, float],
                   data: Mapping[str, float] | None = None) -> None:
        """The ``eval`` event of an evaluation whose result is ``out``; its data: ``out``
        plus ``data``."""
        self.event(step, "eval", f"val/loss {out['val/loss']:.4f}",
                   {k: float(v) for k, v in {**out, **(data or {})}.items()})

    def routing_probe(self, step: int, m: int, routed: Mapping[str, np.ndarray], *,
                      tokens: np.ndarray, domains: np.ndarray, domain_names: list[str],
                      n_experts: int) -> None:
        """The ``routing/probe`` snapshot of member ``m``: the probe text's ``tokens``
        and ``domains`` [N] and how it was routed (``topk_idx`` [n_blocks, N, k], ...)."""
        arrays = {"tokens": np.asarray(tokens, dtype=np.uint8),
                  "domains": np.asarray(domains).astype(np.int16), **routed}
        meta = {"domain_names": list(domain_names), "moe_blocks": list(self.blocks),
                "top_k": int(routed["topk_idx"].shape[-1]), "n_experts": n_experts}
        self.snapshot(step, "routing/probe", arrays, meta, member=m)
