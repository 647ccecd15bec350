"""Ensembles: M members of one architecture trained together in one run.

A run keeps one ``MoEGPT``, optimizer, GradScaler, sampler and precision monitor per
member (``engine/members.py``) (member m's records are written with ``member=m`` exactly as for any run); this
module decides how the members train and evaluates them together.

Methods (``config.ensemble.method``), for members > 1:

- ``seeds``: members differ by initialisation (seed + 1000 m) and batch order.
- ``bagging``: as seeds, and each member draws its windows from its own bootstrap resample
  of the training windows (``data.bootstrap_starts``, seed + 7919 (m + 1)).
- ``snapshot`` (Huang et al. 2017): one model, a cyclic cosine learning rate with
  ``members`` cycles over ``train.steps`` (``segment_starts``). Member k *is* the model
  during cycle k; at the end of cycle k it freezes (the snapshot, kept in memory and
  written as ``snapshot-<k>.pt``) and member k + 1 continues from its weights, optimizer
  state, loss scale and batch stream with the learning rate restarted at its peak
  (``schedule.segment_lr``).
- ``boosting``: members trained in sequence, ``train.steps`` split evenly, each with its
  own warm-up + cosine schedule. Member k >= 1 weights the tokens of its batch by the
  loss of the ensemble so far (``engine/boosting.py``). The weighted loss is what is
  backpropagated (``train/total_loss``); ``train/loss`` stays the plain LM loss.

Parallel methods (seeds, bagging) batch the members' forward and backward into one wide
pass (``engine/wide.py``). The per-member loop is kept for fp16 (per-member loss
scaling and skipped steps), for the first step and for steps on which the precision
monitor measures activations (its hooks sit on the members' own modules), and when the
members' structure is not the one ``WideMembers`` knows (``WideMembers.supports``).

The engine works on explicit collaborators: the run's :class:`~.members.Members` (whose
state it steps and, for snapshot cycles, copies from member to member), the
:class:`~.recorder.Recorder` its records go through, the validation windows and the
probe text.

Evaluation (``EnsembleEngine.evaluate``) records what ``docs/CONTRACTS.md`` lists under
"Ensembles": per-member ``val/loss``/``val/acc`` on all validation tokens (as for one
model), member -1 = mean of probabilities, and the ``ens/*`` metrics of
``agreement.ensemble_metrics`` and every rule of ``combine`` on the report half of the
validation windows.

Under torchrun a seeds or bagging ensemble may be spread over the ranks
(``engine/parallel/member_parallel.py``): each rank's engine trains its block of
members as above and evaluates with every member's outputs gathered from the ranks.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..config import ExperimentConfig, dumps
from ..data import Corpus
from .agreement import ensemble_metrics
from .amp import autocast
from ..data import eval_windows
from .boosting import (BOOST_HIST_EDGES, boosting_weights, mean_prob_token_loss, member_outputs,
                       samme_alpha, samme_weights, weight_histogram, weight_summary)
from .combine import RULES, evaluate_rules, make_rule, nll_acc
from .members import Members
from .model import MoEGPT, train_mode
from .recorder import Recorder
from .schedule import member_at, segment_lr, segment_starts
from .wide import WideMembers

if TYPE_CHECKING:
    from .parallel.member_parallel import MemberSpread

SEQUENTIAL = ("snapshot", "boosting")
ENS_MAX_ELEMS = 1 << 26   # M * N * V budget of the log-probs kept for the ens/* metrics
PAIR_TENSORS = ("agreement", "pair_q", "pair_js", "pair_correlation", "pair_disagreement",
                "pair_double_fault", "pair_kappa")
SCALAR_METRICS = ("disagreement", "q_statistic", "correlation", "double_fault",
                  "kappa_pairwise", "kappa_interrater", "js_divergence", "entropy_total",
                  "entropy_expected", "mutual_info", "kw_variance", "entropy_e")


# ------------------------------------------------------------------ the engine
class EnsembleEngine:
    """How a run's members train and evaluate together (see the module doc).

    ``members``: their training state; ``recorder``: where records go; ``val_batches``:
    the validation windows (inputs, targets) as numpy int64 [B, T]; ``probe``: the
    corpus whose probe text the ``ensemble/probe`` snapshot shows; ``run_dir``: where
    snapshot files go; ``spread``: this rank's share when the members are spread over
    the ranks of a distributed run (``members`` then holds this rank's block; the
    evaluation gathers every member's outputs and rank 0 records it)."""

    def __init__(self, config: ExperimentConfig, members: Members, recorder: Recorder, *,
                 val_batches: list[tuple[np.ndarray, np.ndarray]], probe: Corpus,
                 run_dir: Path, spread: "MemberSpread | None" = None):
        self.config = cfg = config
        self.m = members
        self.recorder = recorder
        self.val_batches = val_batches
        self.probe = probe
        self.run_dir = Path(run_dir)
        self.device = members.device
        self.precision = cfg.precision.mode
        self.total_steps = cfg.train.steps
        self.method = cfg.ensemble.method
        self.spread = spread
        self.members = spread.total if spread is not None else len(members)
        self.local = len(members)           # the members trained here
        self.records = spread is None or spread.writes   # this rank writes evaluations
        self.enabled = self.members > 1
        self.sequential = self.enabled and self.method in SEQUENTIAL
        self.starts = segment_starts(self.total_steps, self.members) if self.sequential else None
        self.wide: WideMembers | None = None
        self.batch_reason = "one member" if not self.enabled else ""
        if self.enabled and not self.sequential:
            if self.precision == "fp16":
                self.batch_reason = "fp16: per-member loss scaling runs the per-member loop"
            elif self.local == 1:
                self.batch_reason = "one member on each rank"
            else:
                why = WideMembers.supports(members.models)
                if why:
                    self.batch_reason = why
                else:
                    self.wide = WideMembers(members.models)
                    self.wide.monitors = members.monitors
        elif self.sequential:
            self.batch_reason = f"{self.method}: one member trains at a time"
        # Switch for tests and benchmarks: False runs the per-member loop every step.
        self.batched = self.wide is not None
        self.boost_beta = cfg.ensemble.boost_beta
        self.boost_mode = cfg.ensemble.boost_mode if self.method == "boosting" else None
        self.combine = cfg.ensemble.combine
        self.alphas: dict[int, float] = {}   # SAMME member weights, set as segments end
        self._alpha_batches: list | None = None
        self.last_boost: dict[str, Any] | None = None   # the latest boosting batch (tests, debugging)
        self.snapshot_paths: dict[int, Path] = {}
        if self.enabled:
            recorder.meta(ensemble={
                "method": self.method, "members": self.members,
                "batched": self.batched, "batch_note": self.batch_reason,
                "rules": list(RULES), "default_rule": self.combine,
                "segment_starts": self.starts, "boost_beta": self.boost_beta
                if self.method == "boosting" else None, "boost_mode": self.boost_mode,
                "combine": self.combine, "members_per_rank": self.local,
                "split": "ens/* metrics: first half of the validation windows fits the "
                         "fitted rules, second half reports every rule and metric"})

    # ------------------------------------------------------------------ who trains when
    def trains(self, m: int, step: int) -> bool:
        return not self.sequential or m == member_at(step, self.starts)

    @property
    def models_per_step(self) -> int:
        """Models trained per step here (a spread ensemble: this rank's members)."""
        return 1 if self.sequential else self.local

    def extra_forwards(self, step: int) -> int:
        """No-grad forwards besides the training ones at ``step`` (0-based): a boosting
        member k >= 1 runs members 0..k-1 on its batch to weight its tokens."""
        if not (self.sequential and self.method == "boosting"):
            return 0
        return member_at(step, self.starts)

    def loss_member(self, step: int) -> int:
        """Member whose training loss a caller sees (StepInfo.loss) for the record of
        step ``step`` (1-based, as recorded)."""
        return member_at(step - 1, self.starts) if self.sequential else 0

    def lr_at(self, step: int) -> float | None:
        """The learning rate of a sequential method at ``step``; None: the trainer's own."""
        if not self.sequential:
            return None
        t = self.config.train
        return segment_lr(step, self.starts, lr=t.lr, min_lr=t.min_lr,
                          warmup_steps=t.warmup_steps, restart_warmup=self.method == "boosting")

    def evaluated_members(self, step_count: int) -> list[int]:
        """Members an evaluation after ``step_count`` completed steps uses: all of them,
        or for sequential methods those whose segment has begun (snapshots so far plus
        the member in training)."""
        if not self.sequential:
            return list(range(self.members))
        return list(range(member_at(max(step_count - 1, 0), self.starts) + 1))

    # ------------------------------------------------------------------ step hooks
    def _use_batched(self, step: int) -> bool:
        if not (self.batched and self.wide is not None) or step == 0:
            return False
        return not any(mon is not None and mon.measures(step + 1) for mon in self.m.monitors)

    def begin_step(self, step: int, stats: bool) -> dict[int, tuple] | None:
        """Before the members' step ``step`` (0-based); ``stats``: collect routing
        statistics. Starts the next snapshot member at a cycle boundary. When the step is
        batched, runs every member's forward and backward in one wide pass and returns
        ``{m: (lm_loss, aux, z, total, scale_before)}``; None means each member runs its
        own forward/backward."""
        if self.sequential and self.method == "snapshot":
            k = member_at(step, self.starts)
            if k > 0 and step == self.starts[k]:
                self._continue_from(k - 1, k)
        if not self._use_batched(step):
            return None
        moe = self.config.moe
        xs, ys = [], []
        for m, model in enumerate(self.m.models):
            train_mode(model)
            model.set_collect_stats(stats)
            x, y = self.m.batch(m)
            xs.append(x)
            ys.append(y)
            if self.m.monitors[m] is not None:
                self.m.monitors[m].begin_step(step + 1)
        with autocast(self.device, self.precision):
            lm = self.wide.loss(torch.stack(xs), torch.stack(ys))
            out = {}
            for m, model in enumerate(self.m.models):
                aux, z = model.aux_loss(), model.z_loss()
                out[m] = (lm[m], aux, z,
                          lm[m] + moe.aux_loss_coef * aux + moe.z_loss_coef * z, None)
        torch.stack([o[3] for o in out.values()]).sum().backward()
        for mon in self.m.monitors:
            if mon is not None:
                mon.after_backward()
        return out

    def member_loss(self, m: int, step: int, x: Tensor, y: Tensor, logits: Tensor,
                    lm_loss: Tensor) -> Tensor:
        """The loss member ``m`` backpropagates at ``step`` (before aux/z terms): the LM
        loss, or for a boosting member k >= 1 the token-weighted LM loss."""
        if not (self.sequential and self.method == "boosting") or m == 0:
            return lm_loss
        if self.boost_mode == "gradient":
            return self._residual_loss(m, step, x, y, logits)
        with torch.no_grad():
            prev = member_outputs(self.m.models[:m], x)      # one pass of the earlier members
            ens_loss = mean_prob_token_loss(prev, y)                              # [B, T]
            valid = y != -1
            w = torch.zeros_like(ens_loss)
            if self.boost_mode == "samme":
                wrong = torch.stack([lg.argmax(-1) != y for lg in prev])      # [m, B, T]
                w[valid] = samme_weights(wrong[:, valid], [self.alphas[j] for j in range(m)])
            else:
                w[valid] = boosting_weights(ens_loss[valid], self.boost_beta)
        tok = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1),
                              ignore_index=-1, reduction="none")
        weighted = (w.reshape(-1) * tok).sum() / valid.sum().clamp_min(1)
        t = self.config.train
        if (step + 1) % t.log_every == 0 or step + 1 == self.total_steps:
            self.recorder.scalars(step + 1, weight_summary(w[valid], ens_loss[valid]), member=m)
        if (step + 1) % t.snapshot_every == 0 or step + 1 == self.starts[m] + 1:
            self.recorder.histogram(step + 1, "boost/weights", BOOST_HIST_EDGES,
                                    weight_histogram(w[valid]), member=m)
        self.last_boost = {"weights": w.detach(), "ens_loss": ens_loss.detach(), "x": x, "y": y,
                           "member": m, "step": step + 1}
        return weighted

    def _residual_loss(self, m: int, step: int, x: Tensor, y: Tensor, logits: Tensor) -> Tensor:
        """Gradient boosting: the cross-entropy of the frozen logit sum of members
        0..m-1 plus member m's own logits."""
        with torch.no_grad():
            prev = torch.stack(member_outputs(self.m.models[:m], x)).sum(0)
        stage = F.cross_entropy((prev + logits.float()).reshape(-1, logits.shape[-1]),
                                y.reshape(-1), ignore_index=-1)
        t = self.config.train
        if (step + 1) % t.log_every == 0 or step + 1 == self.total_steps:
            self.recorder.scalars(step + 1, {"boost/stage_loss": float(stage.detach())}, member=m)
        return stage

    def _alpha_windows(self) -> list:
        """Training windows (fixed, the first ``eval_batches`` batches of the training
        split) on which SAMME measures each member's weighted error."""
        if self._alpha_batches is None:
            c = self.config
            self._alpha_batches = eval_windows(self.probe.train_tokens, c.data.context,
                                               c.data.batch_size, c.train.eval_batches)
        return self._alpha_batches

    @torch.no_grad()
    def samme_alpha_of(self, k: int) -> tuple[float, float]:
        """(weighted error, alpha) of member k on the SAMME windows, token weights from
        the alphas of members 0..k-1."""
        num = den = 0.0
        prev_alpha = torch.tensor([self.alphas[j] for j in range(k)], dtype=torch.float64)
        for xb, yb in self._alpha_windows():
            x = torch.from_numpy(xb).to(self.device)
            y = torch.from_numpy(yb).to(self.device)
            with autocast(self.device, self.precision):
                outs = member_outputs(self.m.models[:k + 1], x)
            wrong = torch.stack([lg.argmax(-1) != y for lg in outs]).double().cpu()   # [k+1, B, T]
            w = torch.exp((wrong[:k] * prev_alpha.view(-1, 1, 1)).sum(0))
            num += float((w * wrong[k]).sum())
            den += float(w.sum())
        err = num / den
        return err, samme_alpha(err, self.m.models[0].vocab)

    def _set_alpha(self, k: int, step: int) -> None:
        err, a = self.samme_alpha_of(k)
        self.alphas[k] = a
        self.recorder.scalars(step, {"boost/alpha": a, "boost/weighted_error": err}, member=k)
        self.recorder.event(step, "note", f"SAMME: member {k} weighted error {err:.4f}, "
                                          f"alpha {a:.4f}", {"member": k, "alpha": a, "error": err},
                            member=k)

    def end_step(self, step_count: int) -> None:
        """After every member's optimizer step; ``step_count`` completed steps. Writes
        the snapshot of a finished snapshot cycle; fixes a SAMME member's alpha at the
        end of its segment."""
        if self.sequential and self.boost_mode == "samme":
            k = member_at(step_count - 1, self.starts)
            if step_count == self.starts[k + 1]:
                self._set_alpha(k, step_count)
            return
        if not (self.sequential and self.method == "snapshot"):
            return
        k = member_at(step_count - 1, self.starts)
        if step_count == self.starts[k + 1]:
            self.save_snapshot(k, step_count)

    def _continue_from(self, src: int, dst: int) -> None:
        """Snapshot ensembles: member ``dst`` continues where member ``src`` stopped."""
        self.m.continue_from(src, dst)
        self.recorder.event(self.starts[dst], "note",
                            f"snapshot cycle {dst + 1}/{self.members} starts from snapshot {src}",
                            {"member": dst, "from": src}, member=dst)

    def save_snapshot(self, k: int, step_count: int) -> Path:
        """Write member k's weights as ``snapshot-<k>.pt`` (loadable with
        weights_only=True) and record a ``checkpoint`` event for member k."""
        p = self.run_dir / f"snapshot-{k:02d}.pt"
        tmp = p.with_name(p.name + ".tmp")
        torch.save({"format": "moe-studio-snapshot-1", "member": k, "step": step_count,
                    "config_toml": dumps(self.config), "model": self.m.models[k].state_dict()}, tmp)
        tmp.replace(p)
        self.snapshot_paths[k] = p
        self.recorder.event(step_count, "checkpoint", f"snapshot {k} saved as {p.name}",
                            {"path": str(p), "snapshot": k}, member=k)
        return p

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def _member_logp(self, model: MoEGPT, x: Tensor) -> Tensor:
        with autocast(self.device, self.precision):
            logits, _ = model(x)
        return F.log_softmax(logits.float(), dim=-1)

    def _local_models(self, members: list[int]) -> list[MoEGPT]:
        """The models of ``members`` (ensemble-wide ids) trained here."""
        first = self.spread.ids.start if self.spread is not None else 0
        return [self.m.models[m - first] for m in members
                if self.spread is None or m in self.spread.ids]

    def _every_member(self, local: list[Tensor]) -> list[Tensor]:
        """The outputs of every evaluated member, from those of the members here (a
        spread ensemble gathers them from the ranks, in member order)."""
        if self.spread is None:
            return local
        return list(self.spread.gather(torch.stack(local)).unbind(0))

    @torch.no_grad()
    def evaluate(self, step: int) -> dict[str, float]:
        """Validation after ``step`` completed steps of every evaluated member and of the
        ensemble; records val/* and ens/* and the ``ensemble/probe`` snapshot. Returns
        member -1's ``{"val/loss", "val/acc"}`` (mean of probabilities over all
        validation tokens). A spread ensemble's ranks all call it (they gather each
        other's outputs); rank 0 records."""
        members = self.evaluated_members(step)
        models = self._local_models(members)
        M = len(members)
        headline = self.headline_rule(members)
        batches = self.val_batches
        n_windows = sum(len(b[0]) for b in batches)
        ctx = batches[0][0].shape[1]
        V = models[0].vocab
        # Windows kept for the ens/* metrics: all, or evenly spaced ones within budget.
        keep_n = max(2, min(n_windows, ENS_MAX_ELEMS // max(1, M * ctx * V)))
        keep = set(np.round(np.linspace(0, n_windows - 1, keep_n)).astype(int).tolist())
        kept_lp: list[Tensor] = []
        kept_y: list[Tensor] = []
        member_nll = np.zeros(M)
        member_correct = np.zeros(M)
        ens_nll = ens_correct = 0.0
        n_tok = 0
        was = [mm.training for mm in models]
        for mm in models:
            mm.eval()
        try:
            w0 = 0
            for xb, yb in ((b[0], b[1]) for b in batches):
                x = torch.from_numpy(xb).to(self.device)
                y = torch.from_numpy(yb).to(self.device)
                logps = self._every_member([self._member_logp(mm, x) for mm in models])
                for j, lp in enumerate(logps):
                    member_nll[j] += float(-lp.gather(-1, y[..., None]).sum())
                    member_correct[j] += float((lp.argmax(-1) == y).sum())
                ens = headline.apply(torch.stack(logps).reshape(M, -1, V)).view_as(logps[0])
                ens_nll += float(-ens.gather(-1, y[..., None]).sum())
                ens_correct += float((ens.argmax(-1) == y).sum())
                n_tok += y.numel()
                rows = [r for r in range(len(xb)) if w0 + r in keep]
                if rows and M > 1 and self.records:
                    ri = torch.as_tensor(rows, device=self.device)
                    kept_lp.append(torch.stack([lp[ri] for lp in logps]).reshape(M, -1, V))
                    kept_y.append(y[ri].reshape(-1))
                w0 += len(xb)
        finally:
            for mm, w in zip(models, was):
                mm.train(w)
        out = {"val/loss": ens_nll / n_tok, "val/acc": ens_correct / n_tok}
        if not self.records:
            if M > 1 and len(self.probe.probe_tokens):
                self.probe_logp(members, np.asarray(self.probe.probe_tokens))   # joins the probe's gather
            return out
        for j, m in enumerate(members):
            self.recorder.scalars(step, {"val/loss": member_nll[j] / n_tok,
                                         "val/acc": member_correct[j] / n_tok}, member=m)
        self.recorder.scalars(step, out, member=-1)
        data = dict(out)
        if M > 1:
            lp_all = torch.cat(kept_lp, dim=1)
            y_all = torch.cat(kept_y)
            n_kept_windows = lp_all.shape[1] // ctx
            # split at a window boundary; with a single window, in its middle
            n_fit = (n_kept_windows // 2) * ctx if n_kept_windows >= 2 else lp_all.shape[1] // 2
            data.update(self._ensemble_records(step, members, lp_all, y_all, n_fit))
            self._write_probe(step, members)
        self.recorder.eval_event(step, out, data)
        return out

    def headline_rule(self, members: list[int]):
        """The ``ensemble.combine`` rule over ``members`` (SAMME: with their alphas; a
        member still in training gets a provisional one, measured now)."""
        if self.combine != "samme":
            return make_rule(self.combine)
        return make_rule("samme", weights=[self.alphas[m] if m in self.alphas
                                           else self.samme_alpha_of(m)[1] for m in members])

    def _ensemble_records(self, step: int, members: list[int], lp: Tensor, y: Tensor,
                          n_fit: int) -> dict[str, float]:
        rec = self.recorder
        rep = slice(n_fit, lp.shape[1])
        met = ensemble_metrics(lp[:, rep], y[rep])
        rules = evaluate_rules(lp, y, n_fit)
        if self.combine not in rules:   # sum_logit / samme: reported beside the others
            nll, acc = nll_acc(self.headline_rule(members).apply(lp[:, rep]), y[rep])
            rules[self.combine] = {"nll": nll, "acc": acc, "params": {}}
        scalars: dict[str, float] = {}
        for name, r in rules.items():
            scalars[f"ens/{name}/val_loss"] = r["nll"]
            scalars[f"ens/{name}/val_acc"] = r["acc"]
        scalars["ens/gain"] = float(np.mean(met["member_nll"])) - rules[self.combine]["nll"]
        for k in SCALAR_METRICS:
            scalars[f"ens/{k}"] = float(met[k])
        scalars["ens/n_members"] = float(len(members))
        scalars["ens/n_tokens"] = float(met["n_tokens"])
        scalars["ens/n_fit_tokens"] = float(n_fit)
        rec.scalars(step, scalars, member=-1)
        for j, m in enumerate(members):
            rec.scalars(step, {"ens/member/val_loss": float(met["member_nll"][j]),
                               "ens/member/val_acc": float(met["member_acc"][j])}, member=m)
        for k in PAIR_TENSORS:
            rec.tensor(step, f"ens/{k}", met[k], member=-1)
        lw, st = rules["loss_weighted"]["params"], rules["stacking"]["params"]
        rec.tensor(step, "ens/loss_weighted/weights", lw["weights"], member=-1)
        rec.tensor(step, "ens/stacking/weights", st["weights"], member=-1)
        rec.tensor(step, "ens/stacking/temperature", st["temperature"], member=-1)
        return {"ens/gain": scalars["ens/gain"], "ens/mutual_info": scalars["ens/mutual_info"]}

    @torch.no_grad()
    def probe_logp(self, members: list[int], tokens: np.ndarray) -> Tensor:
        """Log-probs [M, N, V] of each member on a token sequence, cut into consecutive
        windows of ``data.context`` tokens (as ``probe.route_tokens``); a spread
        ensemble's ranks all call it."""
        ctx = self.config.data.context
        tok = torch.as_tensor(np.asarray(tokens, dtype=np.int64), device=self.device)
        n_full = len(tok) // ctx
        out = []
        for mm in self._local_models(members):
            was = mm.training
            mm.eval()
            try:
                parts = []
                if n_full:       # the whole windows as one batch
                    parts.append(self._member_logp(mm, tok[:n_full * ctx].view(n_full, ctx))
                                 .reshape(n_full * ctx, -1))
                if len(tok) > n_full * ctx:
                    parts.append(self._member_logp(mm, tok[n_full * ctx:][None])[0])
            finally:
                mm.train(was)
            out.append(torch.cat(parts))
        return torch.stack(self._every_member(out))

    def _write_probe(self, step: int, members: list[int]) -> None:
        c = self.probe
        tokens = np.asarray(c.probe_tokens)
        if len(tokens) == 0:
            return
        lp = self.probe_logp(members, tokens)
        met = ensemble_metrics(lp, per_token=True)
        arrays = {"tokens": tokens.astype(np.uint8),
                  "domains": np.asarray(c.probe_domains).astype(np.int16),
                  "top1": met["pred"].astype(np.int16),
                  "mutual_info": np.clip(met["token_mutual_info"], 0.0, None).astype(np.float32),
                  "entropy_total": met["token_entropy_total"].astype(np.float32)}
        meta = {"members": list(members), "domain_names": list(c.probe_domain_names),
                "rule": self.combine,
                "note": "top1[m, t]: member m's prediction of token t + 1 from the tokens of "
                        "its context window up to t"}
        self.recorder.snapshot(step, "ensemble/probe", arrays, meta, member=-1)
