"""The step-wise trainer: what the CLI and the GUI worker drive.

``Trainer(config)`` builds everything; ``step()`` runs one optimizer step for every
ensemble member and hands its results to the run's recorder. Nothing here blocks
between steps, so a caller can pause (stop calling ``step``), resume, or stop
(``close``) at any step boundary.

Collaborators: ``members`` (each member's model, optimizer, scaler, batches, monitor),
``ensemble`` (who trains when, batched members, ensemble evaluation), ``recorder``
(every record the run writes).
"""
from __future__ import annotations

import contextlib
import json
import math
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..config import ExperimentConfig, copy_config, dumps, to_dict, validate
from ..config.schema import BIASED_ROUTERS
from ..config.validate import parse_layer_set
from ..data import eval_windows, load_corpus
from ..paths import default_runs_dir
from ..store import RunWriter
from .amp import autocast, device_defaults, resolve_precision
from .compile import compile_models, eager_only
from .device import describe_device, resolve_device
from .ensemble import EnsembleEngine
from .flops import count_flops, step_flops
from .footprint import FootprintProbe
from .members import Members
from .memory import check_fits
from .model import train_mode
from .parallel.checkpoint import consolidated, localised, writes_checkpoints
from .parallel.ranks import Ranks
from .parallel.member_parallel import MemberRecorder, gathered_members
from .parallel.recording import DistributedRecorder
from .params import count_params
from .probe import route_tokens
from .recorder import Recorder
from .safe_load import load_weights_only
from .schedule import lr_at
from .stages import Stages


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


def fold_step_time(avg: float | None, n: int, dt: float) -> float | None:
    """The seconds per step the ETA uses after the ``n``-th step this process timed
    (1-based) took ``dt`` seconds, from ``avg`` before it. The first step pays one-time
    costs (allocation, kernel selection, caches), often many times a later step: it is
    left out (``avg`` stays, None on a fresh run: the ETA is unknown until a second
    step). Then the plain mean of the steps timed so far, turning into an average
    weighted 0.1 to the newest step from the eleventh on, so that neither the first
    steps nor an occasional slow one (an evaluation) dominate or linger."""
    if n <= 1:
        return avg
    k = n - 1
    if avg is None or k == 1:
        return dt
    return avg + (dt - avg) * max(0.1, 1.0 / k)


class Trainer:
    """Trains ``config.ensemble.members`` models of one architecture and records
    everything to a run folder under ``runs_dir``."""

    def __init__(self, config: ExperimentConfig, runs_dir: str | Path | None = None, *,
                 writer: RunWriter | None = None):
        self.config = cfg = copy_config(validate(config))
        check_fits(cfg)  # before any allocation: refuse what cannot fit, naming the biggest part
        self.device = resolve_device(cfg.train.device)
        # torch.distributed (under torchrun): joins the process group, None for one process
        self.ranks = Ranks.start(cfg, self.device)
        if self.ranks is not None:
            self.device = self.ranks.device
        # "auto" precision becomes what this device trains in, before anything is built
        # or stored: every later reader of the config sees the concrete mode.
        precision_auto = cfg.precision.mode == "auto"
        cfg.precision.mode = resolve_precision(cfg.precision.mode, self.device)
        speed_defaults = device_defaults(self.device)
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
        self.stages = Stages(cfg.train.stages)
        # An ensemble spread over the ranks: this rank's block of whole members.
        self.spread = self.ranks.spread if self.ranks is not None else None
        self.members = Members(cfg, self.corpus.train_tokens, self.device,
                               prepare=self.ranks.prepare_model if self.ranks else None,
                               ids=self.spread.ids if self.spread is not None else None,
                               scaler_group=self.ranks.loss_scale_group if self.ranks else None)
        if self.ranks is not None:
            self.ranks.shard_batches(self.members.samplers)
            self.ranks.seed(cfg.train.seed)
        self.models = self.members.models
        self.flops = count_flops(self.models[0], cfg.data.context,
                                 batch_tokens=cfg.data.batch_size * cfg.data.context)
        self._train_flops = 0.0   # cumulative training FLOPs of all members (cost/train_flops)
        # The step whose memory is measured: the second (the first has no optimizer
        # state before its update and never takes the ensembles' batched path).
        self.footprint_step = min(1, self.total_steps - 1)
        self.footprint: dict | None = None
        self._probe: FootprintProbe | None = None
        self.optimizers = self.members.optimizers
        self.scalers = self.members.scalers
        self.samplers = self.members.samplers
        self.monitors = self.members.monitors
        self.precision = cfg.precision.mode
        # validation windows (inputs, targets), numpy int64 [B, T]
        # Every rank of a distributed run evaluates the windows of the global batch size,
        # so validation reads the same text as one process with that batch would.
        # (A spread ensemble's members each read the whole batch on their own rank.)
        world = self.ranks.world if self.ranks is not None and self.spread is None else 1
        self.val_batches = eval_windows(self.corpus.val_tokens, cfg.data.context,
                                        cfg.data.batch_size * world, cfg.train.eval_batches)
        self._tokens_per_step = cfg.data.batch_size * cfg.data.context
        self._step_time_ema: float | None = None
        self._timed_steps = 0   # steps timed by this process (a resumed run starts again)
        self._t_start = time.time()

        meta = {
            "torch": torch.__version__, "python": platform.python_version(),
            "platform": platform.platform(), "device": describe_device(self.device),
            "params_total": self.params.total, "params_active": self.params.active,
            "members": self.n_members, "total_steps": self.total_steps,
            "domain_names": list(self.corpus.domain_names),
            "corpus": self.corpus.describe(), "moe_blocks": list(self.moe_block_ids),
            "flops_per_token": self.flops.as_meta(),
            "argv": sys.argv[:8],
            "stages": [{"start": s.start, "end": s.end, "freeze": list(s.freeze)}
                       for s in self.stages.stages],
            "precision": {"mode": cfg.precision.mode, "auto": precision_auto, **speed_defaults},
        }
        if self.ranks is not None:
            meta.update(self.ranks.meta())
            writer = self.ranks.writer(lambda: RunWriter.create(
                runs_dir if runs_dir is not None else default_runs_dir(), name=cfg.name,
                config=to_dict(cfg), config_toml=dumps(cfg), meta=meta))
        elif writer is None:
            writer = RunWriter.create(runs_dir if runs_dir is not None else default_runs_dir(),
                                      name=cfg.name, config=to_dict(cfg), config_toml=dumps(cfg),
                                      meta=meta)
        else:
            writer.set_meta(**meta)
        self.writer = writer
        self.run_dir = Path(writer.run_dir)
        self.run_id = writer.run_id
        rec_args = (writer, cfg, self.moe_block_ids, self.monitors, self.device)
        if self.spread is not None:
            self.recorder = MemberRecorder(*rec_args, spread=self.spread)
        else:
            self.recorder = (DistributedRecorder if self.ranks else Recorder)(*rec_args)
        self.ensemble = EnsembleEngine(cfg, self.members, self.recorder,
                                       val_batches=self.val_batches, probe=self.corpus,
                                       run_dir=self.run_dir, spread=self.spread)
        self.compiled = self._compile()

    def _compile(self):
        """``train.compile``: compile the models with one timed warm-up forward +
        backward on the first validation batch (engine/compile.py), recorded in the
        run's meta and as an event."""
        cfg = self.config
        blocked = ("the members of an ensemble may train as one wide model"
                   if self.n_members > 1 else
                   "a precision monitor (precision.headroom or stop_on_nan) hooks every module"
                   if any(m is not None for m in self.monitors) else "")
        x_np, y_np = self.val_batches[0]

        def warmup():
            x = torch.from_numpy(x_np).to(self.device)
            y = torch.from_numpy(y_np).to(self.device)
            for model in self.models:
                with autocast(self.device, self.precision):
                    _, loss = model(x, y)
                    total = (loss + cfg.moe.aux_loss_coef * model.aux_loss()
                             + cfg.moe.z_loss_coef * model.z_loss())
                total.backward()

        res = compile_models(self.models, warmup, setting=cfg.train.compile, device=self.device,
                             blocked_by=blocked)
        if res.requested:
            self.recorder.meta(**res.as_meta())
            msg = (f"compiled ({res.backend}) in {res.seconds:.1f} s" if res.active else res.reason)
            self.recorder.event(0, "compile", msg, res.as_meta()["compile"])
        return res

    # ------------------------------------------------------------------ state
    @property
    def done(self) -> bool:
        return self.step_count >= self.total_steps

    def lr(self, step: int | None = None) -> float:
        t = self.config.train
        s = self.step_count if step is None else step
        if self.ensemble.sequential:   # snapshot / boosting: segment-wise schedules
            return self.ensemble.lr_at(s)
        return lr_at(s, lr=t.lr, min_lr=t.min_lr, warmup_steps=t.warmup_steps,
                     total_steps=self.total_steps)

    # ------------------------------------------------------------------ training
    def step(self) -> StepInfo:
        """One optimizer step for every member in training; records go to the store."""
        if self._closed:
            raise RuntimeError("trainer is closed")
        if self.done:
            raise RuntimeError(f"training is complete ({self.total_steps} steps)")
        cfg = self.config
        t0 = time.perf_counter()
        step = self.step_count
        stage = self.stages.enter(step, self.models)
        if stage is not None:
            self.recorder.event(step, "stage", f"stage from step {step}: {stage.label}",
                                {"start": step, "end": stage.end, "freeze": list(stage.freeze)})
        lr = self.lr(step)
        log_now = (step + 1) % cfg.train.log_every == 0 or step + 1 == self.total_steps
        snap_now = ((step + 1) % cfg.train.snapshot_every == 0 or step == 0
                    or step + 1 == self.total_steps)
        # Routing statistics every train.stats_every steps (and on snapshot steps, whose
        # histograms need them): taken every step they cost ~10 % of an MoE step.
        stats_now = cfg.train.collect_stats and (
            (log_now and ((step + 1) % cfg.train.stats_every == 0 or step + 1 == self.total_steps))
            or snap_now)
        if step == self.footprint_step:   # closed below, or by close() after an exception
            self._probe = FootprintProbe(self.models, self.optimizers, self.device)
            self._probe.begin()
        # All members' forward and backward in one wide pass when the ensemble can (None:
        # each member below runs its own); this also starts snapshot cycles.
        batched = self.ensemble.begin_step(step, stats_now)
        norms: dict[int, torch.Tensor] = {}
        if batched is not None:  # every member's gradients clipped in one pass
            for m in batched:
                self.scalers[m].unscale_(self.optimizers[m])
            norms = dict(zip(batched, clip_grad_norms([self.members.params[m] for m in batched],
                                                      cfg.train.grad_clip)))
        for m, model in enumerate(self.models):
            if not self.ensemble.trains(m, step):  # snapshot/boosting: one member at a time
                continue
            train_mode(model)
            model.set_collect_stats(stats_now)
            if batched is not None:
                lm_loss, aux, z, total, scale_before = batched[m]
                grad_norm = norms[m]
            else:
                lm_loss, aux, z, total, scale_before, grad_norm = self._forward_backward(m, step)
            self._update(m, step, lr, scale_before, grad_norm)
            if log_now:
                self.recorder.member_step(step + 1, m, model, lm_loss, aux, z, total, grad_norm)
            if snap_now and cfg.train.collect_stats and model.moe_blocks:
                self.recorder.router_histograms(step + 1, m, model)
        if self._probe is not None:
            self._record_footprint(self._probe.end(), step + 1)
            self._probe = None

        self.step_count = step + 1
        self.ensemble.end_step(self.step_count)  # snapshot ensembles: a cycle's snapshot
        if self.device.type == "cuda":
            # Without a sync the wall time would measure only the launch queue. One sync
            # per step costs far less than the per-statistic syncs it replaces.
            torch.cuda.synchronize(self.device)
        dt = time.perf_counter() - t0
        self._time_step(dt)
        tokens = self._tokens_per_step * self.ensemble.models_per_step
        flops = step_flops(self.flops, self._tokens_per_step, self.ensemble.models_per_step,
                           self.ensemble.extra_forwards(step))
        self._train_flops += flops
        if log_now:
            self.recorder.scalars(self.step_count, {
                "lr": lr, "tokens_per_s": tokens / max(dt, 1e-9),
                "tokens": float(self.step_count * self._tokens_per_step),
                "elapsed_s": time.time() - self._t_start,
                "cost/flops_per_s": flops / max(dt, 1e-9),
                "cost/train_flops": self._train_flops}, member=-1)
        if self.recorder.due(self.done):
            self.flush_records()

        val_loss = None
        if self.step_count % cfg.train.eval_every == 0 or self.done:
            self.flush_records()
            val_loss = self.evaluate()["val/loss"]
        if snap_now and cfg.train.collect_stats:
            self._write_probe_snapshot()
        if cfg.train.checkpoint_every and self.step_count % cfg.train.checkpoint_every == 0:
            self.save_checkpoint()
        self.recorder.end_step()
        per_step = self._step_time_ema or dt
        eta = (self.total_steps - self.step_count) * per_step if self._step_time_ema else math.nan
        return StepInfo(step=self.step_count, total_steps=self.total_steps,
                        loss=self.recorder.last_loss, lr=lr,
                        tokens_per_s=tokens / per_step, eta_s=eta, val_loss=val_loss)

    def _time_step(self, dt: float) -> None:
        self._timed_steps += 1
        self._step_time_ema = fold_step_time(self._step_time_ema, self._timed_steps, dt)

    def _forward_backward(self, m: int, step: int) -> tuple:
        """Member ``m``'s own forward and backward of step ``step`` (0-based), gradients
        unscaled and clipped: ``(lm_loss, aux, z, total, scale_before, grad_norm)``."""
        cfg = self.config
        model, opt, scaler, mon = self.models[m], self.optimizers[m], self.scalers[m], self.monitors[m]
        x, y = self.members.batch(m)
        if mon is not None:
            mon.begin_step(step + 1)
        with autocast(self.device, self.precision):
            logits, lm_loss = self.members.runners[m](x, y)
            aux = model.aux_loss()
            z = model.z_loss()
            # boosting members backpropagate a token-weighted LM loss
            total = (self.ensemble.member_loss(m, step, x, y, logits, lm_loss)
                     + cfg.moe.aux_loss_coef * aux + cfg.moe.z_loss_coef * z)
        scale_before = scaler.get_scale() if scaler.is_enabled() else None
        scaler.scale(total).backward()
        if mon is not None:
            mon.after_backward()
        scaler.unscale_(opt)
        if self.ranks is not None and self.spread is None:
            grad_norm = self.ranks.sync_and_clip(model, self.members.params[m], cfg.train.grad_clip)
        else:
            grad_norm = clip_grad_norms([self.members.params[m]], cfg.train.grad_clip)[0]
        return lm_loss, aux, z, total, scale_before, grad_norm

    def _update(self, m: int, step: int, lr: float, scale_before: float | None,
                grad_norm: torch.Tensor) -> None:
        """Member ``m``'s optimizer step at learning rate ``lr`` (the loss scaler skips it
        on a non-finite gradient), then the router biases of aux-free balancing."""
        model, opt, scaler, mon = self.models[m], self.optimizers[m], self.scalers[m], self.monitors[m]
        for g in opt.param_groups:
            g["lr"] = lr
        scaler.step(opt)
        scaler.update()
        # Needs the gradients, so before zero_grad: attribution of a skipped step.
        culprit = mon.after_update(step + 1, grad_norm, scaler, scale_before) if mon else None
        opt.zero_grad(set_to_none=True)
        if scaler.is_enabled():
            self.recorder.loss_scale(step + 1, m, scale_before, scaler.get_scale(), culprit)
        if self.config.moe.router in BIASED_ROUTERS and not self.stages.frozen("router"):
            model.update_router_biases()

    def _record_footprint(self, fp: dict, step: int) -> None:
        """The measured memory split (bytes): run meta ``memory_footprint``, and a note
        event at the measured step. Not a scalar series: it is measured once."""
        self.footprint = {**fp, "precision": self.precision, "step": step,
                          "members": self.n_members}
        self.recorder.meta(memory_footprint=self.footprint)
        mib = {k: fp[k] / 2 ** 20 for k in ("params", "grads", "optimizer", "activations")}
        self.recorder.event(step, "note", "memory of one step: " + ", ".join(
            f"{k} {v:.2f} MiB" for k, v in mib.items()) + f" ({self.precision})",
            {k: v for k, v in self.footprint.items() if isinstance(v, (int, float, str))},
            member=-1)

    def flush_records(self) -> None:
        """Hand the statistics batched since the last flush to the store (the trainer
        flushes on its own at eval steps and at the end; a reader of a live run calls
        this to see the latest steps at once)."""
        self.recorder.flush(self.step_count, self.ensemble.loss_member)

    # ------------------------------------------------------------------ probes & eval
    def route_tokens(self, tokens: np.ndarray, member: int = 0) -> dict[str, np.ndarray]:
        """Route a token sequence through member ``member`` (``probe.route_tokens``, in
        windows of ``data.context`` tokens, under the run's precision)."""
        with eager_only():
            return route_tokens(self.models[member], tokens, self.config.data.context,
                                self.precision, self.device)

    def _write_probe_snapshot(self) -> None:
        if not self.moe_block_ids:
            return
        c = self.corpus
        with self.ranks.same_tokens(self.models) if self.ranks else contextlib.nullcontext():
            self._route_probes(c)

    def _route_probes(self, c) -> None:
        for m in range(len(self.models)):   # a spread ensemble: this rank's members
            self.recorder.routing_probe(self.step_count, m, self.route_tokens(c.probe_tokens, member=m),
                                        tokens=c.probe_tokens, domains=c.probe_domains,
                                        domain_names=c.probe_domain_names,
                                        n_experts=self.config.moe.n_experts)

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Validation loss (nats/token) and next-token accuracy of the model; an ensemble's
        members, combination rules and agreement are ``EnsembleEngine.evaluate``'s."""
        if self.ensemble.enabled:
            return self.ensemble.evaluate(self.step_count)
        model = self.models[0]
        nll = correct = 0.0
        n_tok = 0
        model.eval()
        try:
            with eager_only():
                for x_np, y_np in self.val_batches:
                    if self.ranks is not None:   # each rank its rows of the global batch
                        x_np, y_np = self.ranks.shard(x_np), self.ranks.shard(y_np)
                    x = torch.from_numpy(x_np).to(self.device)
                    y = torch.from_numpy(y_np).to(self.device)
                    with autocast(self.device, self.precision):
                        logits, _ = model(x)
                    lp = F.log_softmax(logits.float(), dim=-1)
                    nll += float(-lp.gather(-1, y[..., None]).sum())
                    correct += float((lp.argmax(-1) == y).sum())
                    n_tok += y.numel()
        finally:
            model.train()
        if self.ranks is not None:
            nll, correct, n_tok = self.ranks.sum_over_world(nll, correct, n_tok)
        out = {"val/loss": nll / n_tok, "val/acc": correct / n_tok}
        self.recorder.evaluation(self.step_count, out)
        return out

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        """The checkpoint of the run, in the one-process format whatever the ranks
        (collective under torchrun; a spread ensemble's ranks other than 0 get {})."""
        if self.spread is not None:   # every member, gathered to rank 0
            every = gathered_members(self.spread, [
                (mo.state_dict(), op.state_dict(), sc.state_dict(), smp.state_dict())
                for mo, op, sc, smp in zip(self.models, self.optimizers, self.scalers,
                                           self.samplers)])
            if every is None:
                return {}
            models, optimizers, scalers, samplers = (list(x) for x in zip(*every))
        else:
            if self.ranks is not None:   # every expert, gathered: loads on any world size
                both = [consolidated(self.ranks, m, o) for m, o in zip(self.models, self.optimizers)]
            else:
                both = [(m.state_dict(), o.state_dict()) for m, o in zip(self.models, self.optimizers)]
            models, optimizers = [mo for mo, _ in both], [op for _, op in both]
            scalers = [s.state_dict() for s in self.scalers]
            samplers = [s.state_dict() for s in self.samplers]
        return {
            "format": "moe-studio-checkpoint-1",
            "step": self.step_count,
            "config_toml": dumps(self.config),
            "models": models,
            "optimizers": optimizers,
            "scalers": scalers,
            # Samplers hold numpy bit-generator states (128-bit ints): JSON text keeps
            # the checkpoint loadable with weights_only=True.
            "samplers": json.dumps(samplers),
            "torch_rng": torch.get_rng_state(),
            "step_time_ema": self._step_time_ema or 0.0,
        }

    def save_checkpoint(self, path: str | Path | None = None) -> Path:
        """Write a checkpoint (``checkpoint-<step>.pt`` in the run folder by default)."""
        self.flush_records()
        p = Path(path) if path is not None else self.run_dir / f"checkpoint-{self.step_count:07d}.pt"
        tmp = p.with_name(p.name + ".tmp")
        state = self.state_dict()
        if writes_checkpoints(self.ranks):
            torch.save(state, tmp)
            tmp.replace(p)
        self.recorder.event(self.step_count, "checkpoint", f"saved {p.name}", {"path": str(p)})
        self.recorder.commit()
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
        # A spread ensemble's rank loads its own members' states.
        ids = list(self.members.ids)
        state = {**state, "models": [state["models"][i] for i in ids],
                 "optimizers": [state["optimizers"][i] for i in ids],
                 "scalers": [state["scalers"][i] for i in ids],
                 "samplers": json.dumps([json.loads(state["samplers"])[i] for i in ids])}
        for model, opt, msd, osd in zip(self.models, self.optimizers, state["models"],
                                        state["optimizers"]):
            msd, osd = localised(self.ranks, model, opt, msd, osd)
            model.load_state_dict(msd)
            opt.load_state_dict(osd)
        for sc, sd in zip(self.scalers, state["scalers"]):
            if sd:
                sc.load_state_dict(sd)
        for smp, sd in zip(self.samplers, json.loads(state["samplers"])):
            smp.load_state_dict(sd)
        torch.set_rng_state(state["torch_rng"].cpu())
        self.step_count = int(state["step"])
        # Recomputed, not stored: old checkpoints resume with the same FLOPs axis.
        self._train_flops = sum(step_flops(self.flops, self._tokens_per_step,
                                           self.ensemble.models_per_step,
                                           self.ensemble.extra_forwards(s))
                                for s in range(self.step_count))
        self._step_time_ema = float(state["step_time_ema"]) or None

    def close(self, status: str = "finished", error: str | None = None, *,
              checkpoint: bool = True) -> None:
        """Finish the run: flush statistics, checkpoint on finished/stopped (unless
        ``checkpoint`` is False), mark the status. Idempotent; safe to call after an
        exception (the data already written is kept)."""
        if self._closed:
            return
        self._closed = True
        if self._probe is not None:   # a step failed while its memory was measured
            self._probe.close()
        try:
            if checkpoint and status in ("finished", "stopped") and self.step_count > 0:
                self.save_checkpoint()
            else:
                self.flush_records()
        except Exception as e:  # noqa: BLE001 - never lose the status because a final write failed
            status, error = "failed", (error or "") + f"\nwhile closing: {e!r}"
        finally:
            self.recorder.close(status, error=error)
