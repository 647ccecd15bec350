"""The step-wise trainer: what the CLI and the GUI worker drive.

``Trainer(config)`` builds everything; ``step()`` runs one optimizer step for every
ensemble member and writes its records to the run store. Nothing here blocks between
steps, so a caller can pause (stop calling ``step``), resume, or stop (``close``) at any
step boundary.
"""
from __future__ import annotations

import json
import math
import platform
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..config import ExperimentConfig, copy_config, dumps, to_dict, validate
from ..config.validate import parse_layer_set
from ..data import BatchSampler, bootstrap_starts, eval_windows, load_corpus
from ..paths import default_runs_dir
from ..store import RunWriter
from .device import describe_device, resolve_device
from .ensemble import EnsembleEngine
from .headroom import HeadroomMonitor, nonfinite_event
from .model import MoEGPT
from .memory import check_fits
from .params import count_params
from .safe_load import load_weights_only
from .schedule import lr_at
from .stats import BLOCK_STATS, PendingStep, StatsBuffer, load_cv, max_over_mean

HIST_BINS = 50
LOSS_FIELDS = ("train/loss", "train/aux_loss", "train/z_loss", "train/total_loss", "train/grad_norm")


@dataclass
class StepInfo:
    """What a caller needs after each step (small: it crosses threads as a signal)."""
    step: int              # completed optimizer steps
    total_steps: int
    loss: float            # latest known training LM loss of member 0 (nats/token)
    lr: float
    tokens_per_s: float
    eta_s: float
    val_loss: float | None = None  # set on steps that evaluated


def clip_grad_norms(params: list[list[torch.Tensor]], max_norm: float) -> list[torch.Tensor]:
    """``torch.nn.utils.clip_grad_norm_(params[m], max_norm)`` for every group m (an
    ensemble's members) in one pass: each group's total 2-norm of its gradients (0-d
    tensors, as measured before clipping), and each group's gradients scaled by
    min(1, max_norm / (norm + 1e-6)). ``max_norm`` <= 0 only measures. Parameters
    without a gradient are skipped; a group without any has norm 0."""
    grads = [[p.grad for p in ps if p.grad is not None] for ps in params]
    flat = [g for gs in grads for g in gs]
    if not flat:
        return [torch.zeros(()) for _ in params]
    try:  # one fused kernel per device and dtype (what clip_grad_norm_ itself calls)
        per = torch._foreach_norm(flat, 2.0)
    except (AttributeError, RuntimeError):
        per = [torch.linalg.vector_norm(g) for g in flat]
    per = torch.stack(per).float()            # the members share one device
    # Per-group sums by slicing, not by an index tensor: building one from a host list
    # every step would be a host-to-device copy that waits for the GPU's queued work.
    totals = torch.stack([c.square().sum() for c in per.split([len(gs) for gs in grads])]).sqrt()
    if max_norm > 0:
        coef = (max_norm / (totals + 1e-6)).clamp(max=1.0)
        for gs, c in zip(grads, coef.unbind()):
            if gs:
                c = c.to(gs[0].dtype)
                try:
                    torch._foreach_mul_(gs, c)
                except (AttributeError, RuntimeError, TypeError):
                    for g in gs:
                        g.mul_(c)
    return list(totals.unbind())


def _train_mode(model: torch.nn.Module) -> None:
    """``model.train()`` unless it is already training. The engine only switches whole
    models (``train()`` / ``eval()`` / ``train(was)`` on the root), so the root's flag
    speaks for every submodule; ``train()`` walks the whole tree (~1 ms a call on the
    CPU), twice per member per step otherwise."""
    if not model.training:
        model.train()


def _autocast(device: torch.device, mode: str):
    if mode == "fp32":
        return nullcontext()
    dtype = torch.bfloat16 if mode == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


class Trainer:
    """Trains ``config.ensemble.members`` models of one architecture and records
    everything to a run folder under ``runs_dir``."""

    def __init__(self, config: ExperimentConfig, runs_dir: str | Path | None = None, *,
                 writer: RunWriter | None = None):
        self.config = cfg = copy_config(validate(config))
        check_fits(cfg)  # before any allocation: refuse what cannot fit, naming the biggest part
        self.device = resolve_device(cfg.train.device)
        self.total_steps = cfg.train.steps
        self.step_count = 0
        self._closed = False
        torch.manual_seed(cfg.train.seed)
        np.random.seed(cfg.train.seed % (2 ** 32))

        self.corpus = load_corpus(cfg.data.corpus, context=cfg.data.context,
                                  val_fraction=cfg.data.val_fraction,
                                  probe_text=cfg.data.probe_text)
        self.moe_block_ids = parse_layer_set(cfg.model.moe_layers, cfg.model.n_layers)
        self.n_members = cfg.ensemble.members
        self.params = count_params(cfg)

        self.models: list[MoEGPT] = []
        self.optimizers: list[torch.optim.Optimizer] = []
        self._params: list[list[torch.nn.Parameter]] = []   # each member's, listed once
        self.samplers: list[BatchSampler] = []
        for m in range(self.n_members):
            # Member 0 of any run uses the run's seed, so a one-member run equals the
            # same config without an ensemble section.
            torch.manual_seed(cfg.train.seed + 1000 * m)
            model = MoEGPT(cfg.model, cfg.moe, context=cfg.data.context).to(self.device)
            self.models.append(model)
            self._params.append(list(model.parameters()))
            self.optimizers.append(self._make_optimizer(model))
            starts = None
            if cfg.ensemble.method == "bagging" and self.n_members > 1:
                starts = bootstrap_starts(len(self.corpus.train_tokens), cfg.data.context,
                                          seed=cfg.train.seed + 7919 * (m + 1))
            self.samplers.append(BatchSampler(self.corpus.train_tokens, cfg.data.context,
                                              cfg.data.batch_size, seed=cfg.train.seed + m,
                                              starts=starts))
        torch.manual_seed(cfg.train.seed)

        self.precision = cfg.precision.mode
        self.scalers = [self._make_scaler() for _ in range(self.n_members)]
        # --- precision monitor (engine/headroom.py): headroom statistics every
        # precision.headroom_every steps, and which module went non-finite first.
        p = cfg.precision
        self.monitors: list[HeadroomMonitor | None] = [
            HeadroomMonitor(model, every=p.headroom_every if p.headroom else 0)
            if (p.headroom or p.stop_on_nan) else None for model in self.models]
        self._val = eval_windows(self.corpus.val_tokens, cfg.data.context, cfg.data.batch_size,
                                 cfg.train.eval_batches)
        self._stats = StatsBuffer()
        # On CUDA statistics stay on the device and are copied in batches; on the CPU a
        # "transfer" is free, so records reach the store (and the live views) every step.
        self._flush_every = 25 if self.device.type == "cuda" else 1
        self._tokens_per_step = cfg.data.batch_size * cfg.data.context
        self._step_time_ema: float | None = None
        self._last_loss = float("nan")
        self._last_lr = cfg.train.lr
        self._t_start = time.time()

        meta = {
            "torch": torch.__version__, "python": platform.python_version(),
            "platform": platform.platform(), "device": describe_device(self.device),
            "params_total": self.params.total, "params_active": self.params.active,
            "members": self.n_members, "total_steps": self.total_steps,
            "domain_names": list(self.corpus.domain_names),
            "corpus": self.corpus.describe(), "moe_blocks": list(self.moe_block_ids),
            "argv": sys.argv[:8],
        }
        if writer is None:
            writer = RunWriter.create(runs_dir if runs_dir is not None else default_runs_dir(),
                                      name=cfg.name, config=to_dict(cfg), config_toml=dumps(cfg),
                                      meta=meta)
        else:
            writer.set_meta(**meta)
        self.writer = writer
        self.run_dir = Path(writer.run_dir)
        self.run_id = writer.run_id
        # --- ensemble (engine/ensemble.py): batched members, snapshot cycles, boosting
        self.ensemble = EnsembleEngine(self)

    # ------------------------------------------------------------------ set-up
    def _make_optimizer(self, model: torch.nn.Module) -> torch.optim.Optimizer:
        decay, no_decay = [], []
        for name, p in model.named_parameters():
            if not p.requires_grad:
                continue
            # Matrices (and stacked expert weights) decay; norms, biases and the position
            # table do not (the nanoGPT convention: decay params with dim >= 2, but
            # position embeddings are a lookup table, not a projection).
            (decay if p.dim() >= 2 and "pos_emb" not in name else no_decay).append(p)
        groups = [{"params": decay, "weight_decay": self.config.train.weight_decay},
                  {"params": no_decay, "weight_decay": 0.0}]
        # The fused kernel, on CUDA and on the CPU (torch >= 2.4; measured 3.4x faster
        # than the multi-tensor foreach path for the default model's parameters on one
        # CPU thread, and foreach 1.3x faster than the per-tensor loop torch picks by
        # default on the CPU). Older torch: foreach.
        kw = dict(lr=self.config.train.lr, betas=(0.9, 0.95), eps=1e-8)
        try:
            return torch.optim.AdamW(groups, fused=True, **kw)
        except (RuntimeError, TypeError, ValueError):
            return torch.optim.AdamW(groups, foreach=True, **kw)

    def _make_scaler(self):
        p = self.config.precision
        enabled = p.mode == "fp16"
        return torch.amp.GradScaler(self.device.type, init_scale=p.init_scale,
                                    growth_factor=p.growth_factor, backoff_factor=p.backoff_factor,
                                    growth_interval=p.growth_interval, enabled=enabled)

    # ------------------------------------------------------------------ state
    @property
    def done(self) -> bool:
        return self.step_count >= self.total_steps

    def lr(self, step: int | None = None) -> float:
        t = self.config.train
        s = self.step_count if step is None else step
        ens = getattr(self, "ensemble", None)   # --- ensemble: snapshot/boosting schedules
        if ens is not None and ens.sequential:
            return ens.lr_at(s)
        return lr_at(s, lr=t.lr, min_lr=t.min_lr, warmup_steps=t.warmup_steps,
                     total_steps=self.total_steps)

    def _batch(self, m: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.samplers[m].next()
        return (torch.from_numpy(x).to(self.device, non_blocking=True),
                torch.from_numpy(y).to(self.device, non_blocking=True))

    # ------------------------------------------------------------------ training
    def step(self) -> StepInfo:
        """One optimizer step for every member; records go to the store."""
        if self._closed:
            raise RuntimeError("trainer is closed")
        if self.done:
            raise RuntimeError(f"training is complete ({self.total_steps} steps)")
        cfg = self.config
        t0 = time.perf_counter()
        step = self.step_count
        lr = self.lr(step)
        log_now = (step + 1) % cfg.train.log_every == 0 or step + 1 == self.total_steps
        snap_now = ((step + 1) % cfg.train.snapshot_every == 0 or step == 0
                    or step + 1 == self.total_steps)
        # --- ensemble: starts snapshot cycles; runs all members' forward and backward in one
        # wide pass when it can (None: each member below runs its own)
        batched = self.ensemble.begin_step(step, log_now or snap_now)
        norms: dict[int, torch.Tensor] = {}
        if batched is not None:  # every member's gradients clipped in one pass
            for m in batched:
                self.scalers[m].unscale_(self.optimizers[m])
            norms = dict(zip(batched, clip_grad_norms([self._params[m] for m in batched],
                                                      cfg.train.grad_clip)))
        for m, (model, opt, scaler) in enumerate(zip(self.models, self.optimizers, self.scalers)):
            if not self.ensemble.trains(m, step):  # --- ensemble: snapshot/boosting segments
                continue
            for g in opt.param_groups:
                g["lr"] = lr
            _train_mode(model)
            for blk in model.moe_blocks.values():
                blk.collect_stats = cfg.train.collect_stats and (log_now or snap_now)
            mon = self.monitors[m]
            if batched is not None:  # --- ensemble: forward and backward already done
                lm_loss, aux, z, total, scale_before = batched[m]
                grad_norm = norms[m]
            else:
                x, y = self._batch(m)
                if mon is not None:
                    mon.begin_step(step + 1)
                with _autocast(self.device, self.precision):
                    logits, lm_loss = model(x, y)
                    aux = model.aux_loss()
                    z = model.z_loss()
                    # --- ensemble: boosting members backpropagate a token-weighted LM loss
                    total = (self.ensemble.member_loss(m, step, x, y, logits, lm_loss)
                             + cfg.moe.aux_loss_coef * aux + cfg.moe.z_loss_coef * z)
                scale_before = scaler.get_scale() if scaler.is_enabled() else None
                scaler.scale(total).backward()
                if mon is not None:
                    mon.after_backward()
                scaler.unscale_(opt)
                grad_norm = clip_grad_norms([self._params[m]], cfg.train.grad_clip)[0]
            scaler.step(opt)
            scaler.update()
            # Needs the gradients, so before zero_grad: attribution of a skipped step.
            culprit = mon.after_update(step + 1, grad_norm, scaler, scale_before) if mon else None
            opt.zero_grad(set_to_none=True)
            if scaler.is_enabled():
                new_scale = scaler.get_scale()
                if new_scale < scale_before:
                    where = f" (nearest the loss: {culprit['module']})" if culprit else ""
                    self.writer.add_event(step + 1, "loss_scale_backoff",
                                          f"loss scale {scale_before:g} -> {new_scale:g}: "
                                          f"inf/NaN gradient{where}, step skipped",
                                          {"from": scale_before, "to": new_scale, **(culprit or {})},
                                          member=m)
                    self.writer.add_scalars(step + 1, {"precision/skipped": 1.0}, member=m)
                self.writer.add_scalars(step + 1, {"precision/loss_scale": new_scale}, member=m)
            if cfg.moe.router == "aux_free":
                model.update_router_biases()
            if log_now:
                self._stats.add(self._pending(step + 1, m, model, lm_loss, aux, z, total, grad_norm))
            if snap_now and cfg.train.collect_stats and model.moe_blocks:
                self._write_histograms(step + 1, m, model)

        self.step_count = step + 1
        self.ensemble.end_step(self.step_count)  # --- ensemble: snapshot at a cycle's end
        if self.device.type == "cuda":
            # Without a sync the wall time would measure only the launch queue. One sync
            # per step costs far less than the per-statistic syncs it replaces.
            torch.cuda.synchronize(self.device)
        dt = time.perf_counter() - t0
        self._step_time_ema = dt if self._step_time_ema is None else 0.9 * self._step_time_ema + 0.1 * dt
        tps = self._tokens_per_step * self.ensemble.models_per_step / max(dt, 1e-9)
        host = {"lr": lr, "tokens_per_s": tps, "tokens": float(self.step_count * self._tokens_per_step),
                "elapsed_s": time.time() - self._t_start}
        self._last_lr = lr
        if log_now:
            self.writer.add_scalars(self.step_count, host, member=-1)
        if len(self._stats) >= self._flush_every or self.done:
            self._flush_stats()

        val_loss = None
        if self.step_count % cfg.train.eval_every == 0 or self.done:
            self._flush_stats()
            val_loss = self.evaluate()["val/loss"]
        if snap_now and cfg.train.collect_stats:
            self._write_probe_snapshot()
        if cfg.train.checkpoint_every and self.step_count % cfg.train.checkpoint_every == 0:
            self.save_checkpoint()
        eta = (self.total_steps - self.step_count) * (self._step_time_ema or dt)
        return StepInfo(step=self.step_count, total_steps=self.total_steps, loss=self._last_loss,
                        lr=lr, tokens_per_s=self._tokens_per_step * self.ensemble.models_per_step / self._step_time_ema,
                        eta_s=eta, val_loss=val_loss)

    def _pending(self, step, m, model, lm_loss, aux, z, total, grad_norm) -> PendingStep:
        dev = lm_loss.device
        losses = torch.stack([lm_loss.detach().float(), torch.as_tensor(aux, device=dev).detach().float(),
                              torch.as_tensor(z, device=dev).detach().float(), total.detach().float(),
                              torch.as_tensor(grad_norm, device=dev).detach().float()])
        blocks = [model.moe_blocks[i] for i in sorted(model.moe_blocks)]
        if blocks and self.config.train.collect_stats:
            from .stats import block_stat_vector
            bstats = torch.stack([block_stat_vector(b.last) for b in blocks])
            tpe = torch.stack([b.last.tokens_per_expert.float() for b in blocks])
            dpe = torch.stack([b.last.dropped_per_expert.float() for b in blocks])
            bias = None
            if self.config.moe.router == "aux_free":
                bias = torch.stack([b.router.bias.detach().float() for b in blocks])
        else:
            bstats = tpe = dpe = bias = None
        return PendingStep(step=step, member=m, losses=losses, block_stats=bstats,
                           tokens_per_expert=tpe, dropped_per_expert=dpe, bias=bias)

    def _flush_stats(self) -> None:
        blocks = sorted(self.moe_block_ids)
        for rec in self._stats.drain():
            step, m = rec["step"], rec["member"]
            values = {name: float(v) for name, v in zip(LOSS_FIELDS, rec["losses"])}
            if m == self.ensemble.loss_member(step):  # --- ensemble: the member in training
                self._last_loss = values["train/loss"]
            if rec.get("block_stats") is not None:
                tpe, dpe = rec["tokens_per_expert"], rec["dropped_per_expert"]
                cv, mom = load_cv(tpe), max_over_mean(tpe)
                routed = tpe.sum(axis=-1)
                for j, blk in enumerate(blocks):
                    for name, v in zip(BLOCK_STATS, rec["block_stats"][j]):
                        values[f"moe/L{blk}/{name}"] = float(v)
                    values[f"moe/L{blk}/dropped_frac"] = float(dpe[j].sum() / max(routed[j], 1.0))
                    values[f"moe/L{blk}/load_cv"] = float(cv[j])
                    values[f"moe/L{blk}/load_max_over_mean"] = float(mom[j])
                self.writer.add_tensor(step, "moe/tokens_per_expert", tpe.astype(np.float32), member=m)
                self.writer.add_tensor(step, "moe/dropped_per_expert", dpe.astype(np.float32), member=m)
                if rec.get("bias") is not None:
                    self.writer.add_tensor(step, "moe/bias", rec["bias"].astype(np.float32), member=m)
            self.writer.add_scalars(step, values, member=m)
            # --- precision monitor: non-finite values, attributed to the module that made them
            bad = [k for k, v in values.items() if k.startswith("train/") and not math.isfinite(v)]
            if self.precision == "fp16" and bad == ["train/grad_norm"]:
                bad = []  # the GradScaler skipped this step: recorded as loss_scale_backoff
            mon = self.monitors[m]
            info = mon.attribute(step) if mon is not None else None
            if bad or info:
                msg, data = nonfinite_event(step, bad, info)
                self.writer.add_event(step, "nonfinite", msg, data, member=m)
                if self.config.precision.stop_on_nan:
                    raise FloatingPointError(f"{msg} (member {m}); precision.stop_on_nan is on")
        for m, mon in enumerate(self.monitors):
            # Headroom records, and non-finite outputs on steps whose loss stayed finite.
            if mon is not None and mon.write(self.writer, member=m, upto=self.step_count) \
                    and self.config.precision.stop_on_nan:
                raise FloatingPointError(f"non-finite module output or gradient (member {m}), "
                                         "see the nonfinite event; precision.stop_on_nan is on")

    def _write_histograms(self, step: int, m: int, model: MoEGPT) -> None:
        for i, blk in sorted(model.moe_blocks.items()):
            probs = blk.last.probs
            if probs is None:
                continue
            counts = torch.histc(probs.detach().float(), bins=HIST_BINS, min=0.0, max=1.0)
            self.writer.add_histogram(step, f"router_probs/L{i}", np.linspace(0.0, 1.0, HIST_BINS + 1),
                                      counts.cpu().numpy().astype(np.int64), member=m)

    # ------------------------------------------------------------------ probes & eval
    @torch.no_grad()
    def route_tokens(self, tokens: np.ndarray, member: int = 0) -> dict[str, np.ndarray]:
        """Route a token sequence through member ``member`` in eval mode.

        The sequence is cut into consecutive windows of ``data.context`` tokens (each
        window attends only within itself). Returns ``topk_idx`` int16 [n_blocks, N, k],
        ``topk_weight`` float16 [n_blocks, N, k], ``probs`` float16 [n_blocks, N, E].
        """
        model = self.models[member]
        was_training = model.training
        model.eval()
        ctx = self.config.data.context
        n = len(tokens)
        blocks = sorted(model.moe_blocks)
        outs = {i: {"topk_idx": [], "topk_weight": [], "probs": []} for i in blocks}
        saved = {i: model.moe_blocks[i].collect_stats for i in blocks}
        for i in blocks:
            model.moe_blocks[i].collect_stats = True
        try:
            for s in range(0, n, ctx):
                chunk = torch.as_tensor(np.asarray(tokens[s:s + ctx], dtype=np.int64),
                                        device=self.device)[None, :]
                with _autocast(self.device, self.precision):
                    model(chunk)
                for i in blocks:
                    last = model.moe_blocks[i].last
                    outs[i]["topk_idx"].append(last.topk_idx.reshape(-1, last.topk_idx.shape[-1]))
                    outs[i]["topk_weight"].append(last.topk_weight.reshape(-1, last.topk_weight.shape[-1]).float())
                    outs[i]["probs"].append(last.probs.reshape(-1, last.probs.shape[-1]).float())
        finally:
            for i in blocks:
                model.moe_blocks[i].collect_stats = saved[i]
            model.train(was_training)
        if not blocks:
            return {}
        return {
            "topk_idx": torch.stack([torch.cat(outs[i]["topk_idx"]) for i in blocks]).cpu().numpy().astype(np.int16),
            "topk_weight": torch.stack([torch.cat(outs[i]["topk_weight"]) for i in blocks]).cpu().numpy().astype(np.float16),
            "probs": torch.stack([torch.cat(outs[i]["probs"]) for i in blocks]).cpu().numpy().astype(np.float16),
        }

    def _write_probe_snapshot(self) -> None:
        if not self.moe_block_ids:
            return
        c = self.corpus
        for m in range(self.n_members):
            routed = self.route_tokens(c.probe_tokens, member=m)
            arrays = {"tokens": np.asarray(c.probe_tokens, dtype=np.uint8),
                      "domains": np.asarray(c.probe_domains).astype(np.int16), **routed}
            meta = {"domain_names": list(c.probe_domain_names), "moe_blocks": list(self.moe_block_ids),
                    "top_k": int(routed["topk_idx"].shape[-1]), "n_experts": self.config.moe.n_experts}
            self.writer.add_snapshot(self.step_count, "routing/probe", arrays, meta, member=m)

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Validation loss (nats/token) and next-token accuracy of the model; an ensemble's
        members, combination rules and agreement are ``EnsembleEngine.evaluate``'s."""
        if self.ensemble.enabled:
            return self.ensemble.evaluate()
        model = self.models[0]
        nll = correct = 0.0
        n_tok = 0
        model.eval()
        try:
            for x_np, y_np in self._val:
                x = torch.from_numpy(x_np).to(self.device)
                y = torch.from_numpy(y_np).to(self.device)
                with _autocast(self.device, self.precision):
                    logits, _ = model(x)
                lp = F.log_softmax(logits.float(), dim=-1)
                nll += float(-lp.gather(-1, y[..., None]).sum())
                correct += float((lp.argmax(-1) == y).sum())
                n_tok += y.numel()
        finally:
            model.train()
        out = {"val/loss": nll / n_tok, "val/acc": correct / n_tok}
        self.writer.add_scalars(self.step_count, out, member=0)
        self.writer.add_event(self.step_count, "eval", f"val/loss {out['val/loss']:.4f}",
                              {k: float(v) for k, v in out.items()})
        return out

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        return {
            "format": "moe-studio-checkpoint-1",
            "step": self.step_count,
            "config_toml": dumps(self.config),
            "models": [m.state_dict() for m in self.models],
            "optimizers": [o.state_dict() for o in self.optimizers],
            "scalers": [s.state_dict() for s in self.scalers],
            # Samplers hold numpy bit-generator states (128-bit ints): JSON text keeps
            # the checkpoint loadable with weights_only=True.
            "samplers": json.dumps([s.state_dict() for s in self.samplers]),
            "torch_rng": torch.get_rng_state(),
            "step_time_ema": self._step_time_ema or 0.0,
        }

    def save_checkpoint(self, path: str | Path | None = None) -> Path:
        """Write a checkpoint (``checkpoint-<step>.pt`` in the run folder by default)."""
        self._flush_stats()
        p = Path(path) if path is not None else self.run_dir / f"checkpoint-{self.step_count:07d}.pt"
        tmp = p.with_name(p.name + ".tmp")
        torch.save(self.state_dict(), tmp)
        tmp.replace(p)
        self.writer.add_event(self.step_count, "checkpoint", f"saved {p.name}", {"path": str(p)})
        self.writer.flush()
        return p

    def load_checkpoint(self, path: str | Path) -> None:
        """Restore model, optimizer, scaler, batch stream and RNG state so training
        continues exactly where the checkpoint was taken. Loads with weights_only=True."""
        state = load_weights_only(path, map_location=self.device)
        if state.get("format") != "moe-studio-checkpoint-1":
            raise ValueError(f"{path}: not a MoE Studio checkpoint")
        if len(state["models"]) != self.n_members:
            raise ValueError(f"{path}: checkpoint has {len(state['models'])} members, "
                             f"config has {self.n_members}")
        for model, sd in zip(self.models, state["models"]):
            model.load_state_dict(sd)
        for opt, sd in zip(self.optimizers, state["optimizers"]):
            opt.load_state_dict(sd)
        for sc, sd in zip(self.scalers, state["scalers"]):
            if sd:
                sc.load_state_dict(sd)
        for smp, sd in zip(self.samplers, json.loads(state["samplers"])):
            smp.load_state_dict(sd)
        torch.set_rng_state(state["torch_rng"].cpu())
        self.step_count = int(state["step"])
        self._step_time_ema = float(state["step_time_ema"]) or None

    def close(self, status: str = "finished", error: str | None = None) -> None:
        """Finish the run: flush statistics, checkpoint on finished/stopped, mark the
        status. Idempotent; safe to call after an exception (the data already written
        is kept)."""
        if self._closed:
            return
        self._closed = True
        try:
            if status in ("finished", "stopped") and self.step_count > 0:
                self.save_checkpoint()
            else:
                self._flush_stats()
        except Exception as e:  # never lose the status because a final write failed
            status, error = "failed", (error or "") + f"\nwhile closing: {e!r}"
        finally:
            self.writer.close(status, error=error)
