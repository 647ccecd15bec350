"""Ensembles: M members of one architecture trained together in one run.

The trainer keeps one ``MoEGPT``, optimizer, GradScaler, sampler and precision monitor per
member (member m's records are written with ``member=m`` exactly as for any run); this
module decides how the members train and evaluates them together.

Methods (``config.ensemble.method``), for members > 1:

- ``seeds``: members differ by initialisation (seed + 1000 m) and batch order.
- ``bagging``: as seeds, and each member draws its windows from its own bootstrap resample
  of the training windows (``data.bootstrap_starts``, seed + 7919 (m + 1)).
- ``snapshot`` (Huang et al. 2017): one model, a cyclic cosine learning rate with
  ``members`` cycles over ``train.steps`` (``segment_starts``). Member k *is* the model
  during cycle k; at the end of cycle k it freezes (the snapshot, kept in memory and
  written as ``snapshot-<k>.pt``) and member k + 1 continues from its weights, optimizer
  state, loss scale and batch stream with the learning rate restarted at its peak.
- ``boosting``: members trained in sequence, ``train.steps`` split evenly, each with its
  own warm-up + cosine schedule. Member k >= 1 weights the tokens of its batch by the
  loss of the ensemble so far (mean of the probabilities of members 0..k-1) on them:
  ``w_t = exp(beta * l_t) / mean_batch(exp(beta * l_t))``, ``beta = BOOST_BETA = 0.5``
  (``boosting_weights``). ``beta = 1`` would be the exact functional gradient of adding a
  new member to a mixture (``w = 1 / p_ens(y)``), whose weights are too heavy-tailed
  for small batches; 0.5 is a tempered version. The weighted loss is what is
  backpropagated (``train/total_loss``); ``train/loss`` stays the plain LM loss.

Parallel methods (seeds, bagging) batch the members' forward and backward into one wide
pass (``WideMembers``): the dense parts of all members run as batched matmuls over a
leading member axis ([M, B*T, d] @ [M, d, d']) and one attention call over M*B
sequences; an MoE block runs each member's own ``MoEFeedForward`` on its slice (its
sort-based dispatch has data-dependent shapes). The member parameters stay the
members' own leaves, stacked afresh every step, so autograd fills each member's .grad and
everything after the backward (unscale, clipping, optimizer, monitor, records) is the
per-member code of the trainer. Chosen by measurement over ``torch.func.vmap`` +
``functional_call``, which fell back to a per-sample loop for the CPU attention kernel
and was slower than the plain loop (see ``bench/ensemble.py``). The per-member loop is
kept for fp16 (per-member loss scaling and skipped steps), for the first step and for
steps on which the precision monitor measures activations (its hooks sit on the
members' own modules), and when the members' structure is not the one ``WideMembers``
knows (``WideMembers.supports``).

Evaluation (``EnsembleEngine.evaluate``) records what ``docs/CONTRACTS.md`` lists under
"Ensembles": per-member ``val/loss``/``val/acc`` on all validation tokens (as for one
model), member -1 = mean of probabilities, and the ``ens/*`` metrics of
``agreement.ensemble_metrics`` and every rule of ``combine`` on the report half of the
validation windows.
"""
from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .agreement import ensemble_metrics
from .combine import DEFAULT_RULE, RULES, evaluate_rules
from .model import CausalSelfAttention, MoEGPT
from .moe_layer import FeedForward, MoEFeedForward
from .schedule import lr_at

if TYPE_CHECKING:  # pragma: no cover
    from .trainer import Trainer

SEQUENTIAL = ("snapshot", "boosting")
BOOST_BETA = 0.5
BOOST_HIST_EDGES = np.linspace(0.0, 8.0, 51)   # weights above 8 x mean land in the last bin
ENS_MAX_ELEMS = 1 << 26   # M * N * V budget of the log-probs kept for the ens/* metrics
PAIR_TENSORS = ("agreement", "pair_q", "pair_js", "pair_correlation", "pair_disagreement",
                "pair_double_fault", "pair_kappa")
SCALAR_METRICS = ("disagreement", "q_statistic", "correlation", "double_fault",
                  "kappa_pairwise", "kappa_interrater", "js_divergence", "entropy_total",
                  "entropy_expected", "mutual_info")


# ------------------------------------------------------------------ schedules & weights
def segment_starts(total_steps: int, members: int) -> list[int]:
    """First optimizer step (0-based) of each member's segment, plus ``total_steps``:
    ``[round(k * S / M) for k in 0..M]``. Member k trains steps [starts[k], starts[k+1])."""
    return [int(round(k * total_steps / members)) for k in range(members + 1)]


def member_at(step: int, starts: list[int]) -> int:
    """The member whose segment holds optimizer step ``step`` (0-based)."""
    m = len(starts) - 1
    for k in range(m):
        if step < starts[k + 1]:
            return k
    return m - 1


def segment_lr(step: int, starts: list[int], *, lr: float, min_lr: float, warmup_steps: int,
               restart_warmup: bool) -> float:
    """Learning rate at ``step`` for segment-wise schedules: within each segment of
    length L a warm-up of min(warmup_steps, L // 2) steps then a cosine from ``lr`` to
    ``min_lr``. Snapshot ensembles warm up only in the first cycle (later cycles restart
    at the peak: ``restart_warmup=False``); boosting warms up every member."""
    k = member_at(step, starts)
    length = max(1, starts[k + 1] - starts[k])
    warm = min(warmup_steps, length // 2) if (k == 0 or restart_warmup) else 0
    return lr_at(step - starts[k], lr=lr, min_lr=min_lr, warmup_steps=warm, total_steps=length)


def boosting_weights(ens_loss: Tensor, beta: float = BOOST_BETA) -> Tensor:
    """Per-token weights from the ensemble-so-far's per-token loss (nats), any shape:
    ``exp(beta * l) / mean(exp(beta * l))`` (mean 1 over all given tokens; monotone in
    the loss; computed stably by subtracting the maximum first). Tokens with a negative
    loss marker (ignored targets) are not expected here."""
    l = ens_loss.detach().float()
    w = torch.exp(beta * (l - l.max()))
    return w / w.mean()


def weight_summary(w: Tensor, ens_loss: Tensor) -> dict[str, float]:
    """Summary scalars of boosting weights (mean 1): max, effective sample size as a
    fraction of the tokens ((sum w)^2 / (N sum w^2)), the ensemble's mean loss on the
    batch, and the Pearson correlation between weight and ensemble loss."""
    w64, l64 = w.detach().double().flatten(), ens_loss.detach().double().flatten()
    n = w64.numel()
    ess = float(w64.sum() ** 2 / (n * (w64 ** 2).sum()))
    wc, lc = w64 - w64.mean(), l64 - l64.mean()
    den = float(torch.sqrt((wc ** 2).sum() * (lc ** 2).sum()))
    corr = float((wc * lc).sum()) / den if den > 0 else math.nan
    return {"boost/weight_max": float(w64.max()), "boost/weight_ess": ess,
            "boost/ens_loss": float(l64.mean()), "boost/weight_loss_corr": corr}


# ------------------------------------------------------------------ the wide forward
_DENSE_BLOCK_PARAMS = ("ln1.weight", "ln1.bias", "attn.qkv.weight", "attn.out_proj.weight",
                       "ln2.weight", "ln2.bias", "ffn.up_proj.weight", "ffn.down_proj.weight")
_MOE_BLOCK_PARAMS = _DENSE_BLOCK_PARAMS[:6]
_TOP_PARAMS = ("tok_emb.weight", "pos_emb.weight", "ln_f.weight", "ln_f.bias")


class WideMembers:
    """The forward pass of M same-architecture ``MoEGPT`` members as one wide model.

    ``loss(idx [M, B, T], targets [M, B, T]) -> [M]`` mean next-token cross-entropy of
    each member on its own batch (targets -1 ignored), numerically the members' own
    ``model(idx[m], targets[m])[1]`` up to float rounding. Parameters are read from the
    members on every call (``torch.stack``), so gradients land in each member's .grad.
    """

    def __init__(self, models: list[MoEGPT]):
        why = self.supports(models)
        if why:
            raise ValueError(why)
        self.models = models
        ref = models[0]
        self.moe = [isinstance(b.ffn, MoEFeedForward) for b in ref.blocks]
        self.n_heads = ref.blocks[0].attn.n_heads
        named = [dict(m.named_parameters()) for m in models]
        self._params: dict[str, list[Tensor]] = {
            name: [p[name] for p in named] for name in self._names(ref)}
        # Each member's HeadroomMonitor (or None), set by the engine: the batched forward
        # calls no nn.Linear / nn.Embedding, so it reports their outputs itself.
        self.monitors: list[Any] = []

    def _seen(self, name: str, out: Tensor) -> None:
        """Member m's slice of ``out`` [M, ...] to member m's monitor, as the forward hook
        of module ``name`` would have seen it. On the CPU one min/max over all members
        (reading it costs no sync there) tells the monitors when every slice is finite,
        the usual case, instead of one check per member; otherwise, and on devices
        where a host read would wait for queued work, each monitor checks its slice."""
        if not any(mon is not None for mon in self.monitors):
            return
        finite = False
        if out.device.type == "cpu" and out.numel():
            with torch.no_grad():
                lo, hi = torch.aminmax(out.detach())
            finite = math.isfinite(lo.item()) and math.isfinite(hi.item())
        for m, mon in enumerate(self.monitors):
            if mon is not None:
                mon.observe(name, out[m], finite)

    @staticmethod
    def _names(model: MoEGPT) -> list[str]:
        names = list(_TOP_PARAMS)
        for i, b in enumerate(model.blocks):
            own = _MOE_BLOCK_PARAMS if isinstance(b.ffn, MoEFeedForward) else _DENSE_BLOCK_PARAMS
            names += [f"blocks.{i}.{n}" for n in own]
        return names

    @classmethod
    def supports(cls, models: list[MoEGPT]) -> str | None:
        """None when the wide pass reproduces these members' forward; otherwise why not."""
        if len(models) < 2:
            return "one member: nothing to batch"
        ref = models[0]
        if type(ref) is not MoEGPT:
            return f"unknown model class {type(ref).__name__}"
        names = set(cls._names(ref))
        for i, b in enumerate(ref.blocks):
            if type(b.attn) is not CausalSelfAttention or type(b.ln1) is not torch.nn.LayerNorm:
                return f"block {i}: unknown attention or norm module"
            if not isinstance(b.ffn, (FeedForward, MoEFeedForward)):
                return f"block {i}: unknown feed-forward {type(b.ffn).__name__}"
            if isinstance(b.ffn, FeedForward) and type(b.ffn) is not FeedForward:
                return f"block {i}: feed-forward subclass {type(b.ffn).__name__}"
        shapes = {n: tuple(p.shape) for n, p in ref.named_parameters()}
        own = {n for n in shapes if not (".ffn." in n and cls._is_moe_param(ref, n))}
        if own != names:
            return f"parameters differ from the known layout: {sorted(own ^ names)[:4]}"
        for m in models[1:]:
            if {n: tuple(p.shape) for n, p in m.named_parameters()} != shapes:
                return "members differ in shape"
        return None

    @staticmethod
    def _is_moe_param(model: MoEGPT, name: str) -> bool:
        i = int(name.split(".")[1])
        return isinstance(model.blocks[i].ffn, MoEFeedForward)

    def _st(self, name: str) -> Tensor:
        return torch.stack(self._params[name])

    @staticmethod
    def _ln(x: Tensor, w: Tensor, b: Tensor, eps: float) -> Tensor:
        # [M, N, d] normalised, then each member's affine [M, d]
        return torch.addcmul(b[:, None, :], F.layer_norm(x, x.shape[-1:], eps=eps), w[:, None, :])

    def loss(self, idx: Tensor, targets: Tensor) -> Tensor:
        ref = self.models[0]
        M, B, T = idx.shape
        if T > ref.context:
            raise ValueError(f"sequence of {T} tokens is longer than the context ({ref.context})")
        training = ref.training
        tok = self._st("tok_emb.weight")                                   # [M, V, d]
        V, d = tok.shape[1:]
        offset = (torch.arange(M, device=idx.device) * V).view(M, 1, 1)
        x = F.embedding(idx + offset, tok.reshape(M * V, d))               # [M, B, T, d]
        self._seen("tok_emb", x)
        pos = self._st("pos_emb.weight")[:, :T]                            # [M, T, d]
        self._seen("pos_emb", pos)
        x = x + pos[:, None]
        x = F.dropout(x, ref.drop.p, training).reshape(M, B * T, d)
        H = self.n_heads
        for i, blk in enumerate(ref.blocks):
            p = f"blocks.{i}."
            h = self._ln(x, self._st(p + "ln1.weight"), self._st(p + "ln1.bias"), blk.ln1.eps)
            qkv = torch.bmm(h, self._st(p + "attn.qkv.weight").transpose(1, 2))   # [M, BT, 3d]
            self._seen(p + "attn.qkv", qkv)
            q, k, v = (t.reshape(M * B, T, H, d // H).transpose(1, 2) for t in qkv.split(d, dim=2))
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                               dropout_p=blk.attn.dropout if training else 0.0)
            y = y.transpose(1, 2).reshape(M, B * T, d)
            y = torch.bmm(y, self._st(p + "attn.out_proj.weight").transpose(1, 2))
            self._seen(p + "attn.out_proj", y)
            x = x + F.dropout(y, blk.drop.p, training)
            h = self._ln(x, self._st(p + "ln2.weight"), self._st(p + "ln2.bias"), blk.ln2.eps)
            if self.moe[i]:
                f = torch.stack([mm.blocks[i].ffn(h[m].view(B, T, d)).view(B * T, d)
                                 for m, mm in enumerate(self.models)])
            else:
                u = torch.bmm(h, self._st(p + "ffn.up_proj.weight").transpose(1, 2))
                self._seen(p + "ffn.up_proj", u)
                f = torch.bmm(F.gelu(u), self._st(p + "ffn.down_proj.weight").transpose(1, 2))
                self._seen(p + "ffn.down_proj", f)
            x = x + F.dropout(f, blk.drop.p, training)
        h = self._ln(x, self._st("ln_f.weight"), self._st("ln_f.bias"), ref.ln_f.eps)
        logits = torch.bmm(h, tok.transpose(1, 2))                         # [M, BT, V]
        self._seen("lm_head", logits)
        tgt = targets.reshape(M, B * T)
        per_tok = F.cross_entropy(logits.float().reshape(M * B * T, V), tgt.reshape(-1),
                                  ignore_index=-1, reduction="none").view(M, B * T)
        valid = (tgt != -1).sum(1)
        # mean over the valid targets, NaN when there are none (as F.cross_entropy's mean)
        return per_tok.sum(1) / valid


# ------------------------------------------------------------------ the engine
class EnsembleEngine:
    """How the trainer's members train and evaluate together (see the module doc)."""

    def __init__(self, trainer: "Trainer"):
        self.t = trainer
        cfg = trainer.config
        self.method = cfg.ensemble.method
        self.members = trainer.n_members
        self.enabled = self.members > 1
        self.sequential = self.enabled and self.method in SEQUENTIAL
        self.starts = segment_starts(trainer.total_steps, self.members) if self.sequential else None
        self.wide: WideMembers | None = None
        self.batch_reason = "one member" if not self.enabled else ""
        if self.enabled and not self.sequential:
            if trainer.precision == "fp16":
                self.batch_reason = "fp16: per-member loss scaling runs the per-member loop"
            else:
                why = WideMembers.supports(trainer.models)
                if why:
                    self.batch_reason = why
                else:
                    self.wide = WideMembers(trainer.models)
                    self.wide.monitors = trainer.monitors
        elif self.sequential:
            self.batch_reason = f"{self.method}: one member trains at a time"
        # Switch for tests and benchmarks: False runs the per-member loop every step.
        self.batched = self.wide is not None
        self.boost_beta = BOOST_BETA
        self.last_boost: dict[str, Any] | None = None   # the latest boosting batch (tests, debugging)
        self.snapshot_paths: dict[int, Path] = {}
        if self.enabled:
            trainer.writer.set_meta(ensemble={
                "method": self.method, "members": self.members,
                "batched": self.batched, "batch_note": self.batch_reason,
                "rules": list(RULES), "default_rule": DEFAULT_RULE,
                "segment_starts": self.starts, "boost_beta": self.boost_beta
                if self.method == "boosting" else None,
                "split": "ens/* metrics: first half of the validation windows fits the "
                         "fitted rules, second half reports every rule and metric"})

    # ------------------------------------------------------------------ who trains when
    def current_member(self, step: int) -> int:
        """Member trained at optimizer step ``step`` (0-based); 0 for parallel methods."""
        return member_at(step, self.starts) if self.sequential else 0

    def trains(self, m: int, step: int) -> bool:
        return not self.sequential or m == member_at(step, self.starts)

    @property
    def models_per_step(self) -> int:
        return 1 if self.sequential else self.members

    def loss_member(self, step: int) -> int:
        """Member whose training loss a caller sees (StepInfo.loss) for the record of
        step ``step`` (1-based, as recorded)."""
        return member_at(step - 1, self.starts) if self.sequential else 0

    def lr_at(self, step: int) -> float | None:
        """The learning rate of a sequential method at ``step``; None: the trainer's own."""
        if not self.sequential:
            return None
        t = self.t.config.train
        return segment_lr(step, self.starts, lr=t.lr, min_lr=t.min_lr,
                          warmup_steps=t.warmup_steps, restart_warmup=self.method == "boosting")

    def evaluated_members(self, step_count: int | None = None) -> list[int]:
        """Members an evaluation after ``step_count`` completed steps uses: all of them,
        or for sequential methods those whose segment has begun (snapshots so far plus
        the member in training)."""
        if not self.sequential:
            return list(range(self.members))
        s = self.t.step_count if step_count is None else step_count
        return list(range(member_at(max(s - 1, 0), self.starts) + 1))

    # ------------------------------------------------------------------ step hooks
    def _use_batched(self, step: int) -> bool:
        if not (self.batched and self.wide is not None) or step == 0:
            return False
        return not any(mon is not None and mon.measures(step + 1) for mon in self.t.monitors)

    def begin_step(self, step: int, stats: bool) -> dict[int, tuple] | None:
        """Before the members' step ``step`` (0-based). Starts the next snapshot member at
        a cycle boundary. When the step is batched, runs every member's forward and
        backward in one wide pass and returns ``{m: (lm_loss, aux, z, total,
        scale_before)}``; None means each member runs its own forward/backward."""
        t = self.t
        if self.sequential and self.method == "snapshot":
            k = member_at(step, self.starts)
            if k > 0 and step == self.starts[k]:
                self._continue_from(k - 1, k)
        if not self._use_batched(step):
            return None
        from .trainer import _autocast, _train_mode

        cfg = t.config
        xs, ys = [], []
        for m, model in enumerate(t.models):
            _train_mode(model)
            for blk in model.moe_blocks.values():
                blk.collect_stats = cfg.train.collect_stats and stats
            x, y = t._batch(m)
            xs.append(x)
            ys.append(y)
            if t.monitors[m] is not None:
                t.monitors[m].begin_step(step + 1)
        with _autocast(t.device, t.precision):
            lm = self.wide.loss(torch.stack(xs), torch.stack(ys))
            out = {}
            for m, model in enumerate(t.models):
                aux, z = model.aux_loss(), model.z_loss()
                out[m] = (lm[m], aux, z,
                          lm[m] + cfg.moe.aux_loss_coef * aux + cfg.moe.z_loss_coef * z, None)
        torch.stack([o[3] for o in out.values()]).sum().backward()
        for mon in t.monitors:
            if mon is not None:
                mon.after_backward()
        return out

    def member_loss(self, m: int, step: int, x: Tensor, y: Tensor, logits: Tensor,
                    lm_loss: Tensor) -> Tensor:
        """The loss member ``m`` backpropagates at ``step`` (before aux/z terms): the LM
        loss, or for a boosting member k >= 1 the token-weighted LM loss."""
        if not (self.sequential and self.method == "boosting") or m == 0:
            return lm_loss
        t = self.t
        with torch.no_grad():
            prev = []
            for j in range(m):
                mj = t.models[j]
                was = mj.training
                mj.eval()
                lg, _ = mj(x)
                mj.train(was)
                prev.append(F.log_softmax(lg.float(), dim=-1))
            ens = torch.logsumexp(torch.stack(prev), dim=0) - math.log(m)     # [B, T, V]
            valid = y != -1
            ens_loss = -ens.gather(-1, y.clamp_min(0)[..., None])[..., 0]       # [B, T]
            w = torch.zeros_like(ens_loss)
            w[valid] = boosting_weights(ens_loss[valid], self.boost_beta)
        tok = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1),
                              ignore_index=-1, reduction="none")
        weighted = (w.reshape(-1) * tok).sum() / valid.sum().clamp_min(1)
        cfg = t.config.train
        if (step + 1) % cfg.log_every == 0 or step + 1 == t.total_steps:
            t.writer.add_scalars(step + 1, weight_summary(w[valid], ens_loss[valid]), member=m)
        if (step + 1) % cfg.snapshot_every == 0 or step + 1 == self.starts[m] + 1:
            counts = np.histogram(np.clip(w[valid].cpu().numpy(), 0, BOOST_HIST_EDGES[-1]),
                                  bins=BOOST_HIST_EDGES)[0]
            t.writer.add_histogram(step + 1, "boost/weights", BOOST_HIST_EDGES, counts, member=m)
        self.last_boost = {"weights": w.detach(), "ens_loss": ens_loss.detach(), "x": x, "y": y,
                           "member": m, "step": step + 1}
        return weighted

    def end_step(self, step_count: int) -> None:
        """After every member's optimizer step; ``step_count`` completed steps. Writes
        the snapshot of a finished snapshot cycle."""
        if not (self.sequential and self.method == "snapshot"):
            return
        k = member_at(step_count - 1, self.starts)
        if step_count == self.starts[k + 1]:
            self.save_snapshot(k, step_count)

    def _continue_from(self, src: int, dst: int) -> None:
        """Snapshot ensembles: member ``dst`` continues where member ``src`` stopped."""
        t = self.t
        t.models[dst].load_state_dict(t.models[src].state_dict())
        t.optimizers[dst].load_state_dict(copy.deepcopy(t.optimizers[src].state_dict()))
        if t.scalers[src].is_enabled():
            t.scalers[dst].load_state_dict(t.scalers[src].state_dict())
        t.samplers[dst].load_state_dict(t.samplers[src].state_dict())
        t.writer.add_event(self.starts[dst], "note",
                           f"snapshot cycle {dst + 1}/{self.members} starts from snapshot {src}",
                           {"member": dst, "from": src}, member=dst)

    def save_snapshot(self, k: int, step_count: int) -> Path:
        """Write member k's weights as ``snapshot-<k>.pt`` (loadable with
        weights_only=True) and record a ``checkpoint`` event for member k."""
        from ..config import dumps

        t = self.t
        p = t.run_dir / f"snapshot-{k:02d}.pt"
        tmp = p.with_name(p.name + ".tmp")
        torch.save({"format": "moe-studio-snapshot-1", "member": k, "step": step_count,
                    "config_toml": dumps(t.config), "model": t.models[k].state_dict()}, tmp)
        tmp.replace(p)
        self.snapshot_paths[k] = p
        t.writer.add_event(step_count, "checkpoint", f"snapshot {k} saved as {p.name}",
                           {"path": str(p), "snapshot": k}, member=k)
        return p

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def _member_logp(self, model: MoEGPT, x: Tensor) -> Tensor:
        from .trainer import _autocast

        with _autocast(self.t.device, self.t.precision):
            logits, _ = model(x)
        return F.log_softmax(logits.float(), dim=-1)

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Validation of every evaluated member and of the ensemble; writes val/* and
        ens/* records and the ``ensemble/probe`` snapshot. Returns member -1's
        ``{"val/loss", "val/acc"}`` (mean of probabilities over all validation tokens)."""
        t = self.t
        step = t.step_count
        members = self.evaluated_members()
        models = [t.models[m] for m in members]
        M = len(models)
        batches = t._val
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
                x = torch.from_numpy(xb).to(t.device)
                y = torch.from_numpy(yb).to(t.device)
                logps = []
                for j, mm in enumerate(models):
                    lp = self._member_logp(mm, x)
                    logps.append(lp)
                    member_nll[j] += float(-lp.gather(-1, y[..., None]).sum())
                    member_correct[j] += float((lp.argmax(-1) == y).sum())
                ens = torch.logsumexp(torch.stack(logps), dim=0) - math.log(M)
                ens_nll += float(-ens.gather(-1, y[..., None]).sum())
                ens_correct += float((ens.argmax(-1) == y).sum())
                n_tok += y.numel()
                rows = [r for r in range(len(xb)) if w0 + r in keep]
                if rows and M > 1:
                    ri = torch.as_tensor(rows, device=t.device)
                    kept_lp.append(torch.stack([lp[ri] for lp in logps]).reshape(M, -1, V))
                    kept_y.append(y[ri].reshape(-1))
                w0 += len(xb)
        finally:
            for mm, w in zip(models, was):
                mm.train(w)
        for j, m in enumerate(members):
            t.writer.add_scalars(step, {"val/loss": member_nll[j] / n_tok,
                                        "val/acc": member_correct[j] / n_tok}, member=m)
        out = {"val/loss": ens_nll / n_tok, "val/acc": ens_correct / n_tok}
        t.writer.add_scalars(step, out, member=-1)
        data = dict(out)
        if M > 1:
            lp_all = torch.cat(kept_lp, dim=1)
            y_all = torch.cat(kept_y)
            n_kept_windows = lp_all.shape[1] // ctx
            # split at a window boundary; with a single window, in its middle
            n_fit = (n_kept_windows // 2) * ctx if n_kept_windows >= 2 else lp_all.shape[1] // 2
            data.update(self._ensemble_records(step, members, lp_all, y_all, n_fit))
            self._write_probe(step, members)
        t.writer.add_event(step, "eval", f"val/loss {out['val/loss']:.4f}",
                           {k: float(v) for k, v in data.items()})
        return out

    def _ensemble_records(self, step: int, members: list[int], lp: Tensor, y: Tensor,
                          n_fit: int) -> dict[str, float]:
        w = self.t.writer
        rep = slice(n_fit, lp.shape[1])
        met = ensemble_metrics(lp[:, rep], y[rep])
        rules = evaluate_rules(lp, y, n_fit)
        scalars: dict[str, float] = {}
        for name, r in rules.items():
            scalars[f"ens/{name}/val_loss"] = r["nll"]
            scalars[f"ens/{name}/val_acc"] = r["acc"]
        scalars["ens/gain"] = float(np.mean(met["member_nll"])) - rules[DEFAULT_RULE]["nll"]
        for k in SCALAR_METRICS:
            scalars[f"ens/{k}"] = float(met[k])
        scalars["ens/n_members"] = float(len(members))
        scalars["ens/n_tokens"] = float(met["n_tokens"])
        scalars["ens/n_fit_tokens"] = float(n_fit)
        w.add_scalars(step, scalars, member=-1)
        for j, m in enumerate(members):
            w.add_scalars(step, {"ens/member/val_loss": float(met["member_nll"][j]),
                                 "ens/member/val_acc": float(met["member_acc"][j])}, member=m)
        for k in PAIR_TENSORS:
            w.add_tensor(step, f"ens/{k}", np.asarray(met[k], dtype=np.float32), member=-1)
        lw, st = rules["loss_weighted"]["params"], rules["stacking"]["params"]
        w.add_tensor(step, "ens/loss_weighted/weights", np.asarray(lw["weights"], np.float32), member=-1)
        w.add_tensor(step, "ens/stacking/weights", np.asarray(st["weights"], np.float32), member=-1)
        w.add_tensor(step, "ens/stacking/temperature", np.asarray(st["temperature"], np.float32),
                     member=-1)
        return {"ens/gain": scalars["ens/gain"], "ens/mutual_info": scalars["ens/mutual_info"]}

    @torch.no_grad()
    def probe_logp(self, members: list[int], tokens: np.ndarray) -> Tensor:
        """Log-probs [M, N, V] of each member on a token sequence, cut into consecutive
        windows of ``data.context`` tokens (as ``Trainer.route_tokens``)."""
        t = self.t
        ctx = t.config.data.context
        tok = torch.as_tensor(np.asarray(tokens, dtype=np.int64), device=t.device)
        n_full = len(tok) // ctx
        out = []
        for m in members:
            mm = t.models[m]
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
        return torch.stack(out)

    def _write_probe(self, step: int, members: list[int]) -> None:
        c = self.t.corpus
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
                "rule": DEFAULT_RULE,
                "note": "top1[m, t]: member m's prediction of token t + 1 from the tokens of "
                        "its context window up to t"}
        self.t.writer.add_snapshot(step, "ensemble/probe", arrays, meta, member=-1)
