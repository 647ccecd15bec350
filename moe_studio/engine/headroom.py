"""Headroom analysis and non-finite attribution, attached to a model from outside by hooks.

``HeadroomMonitor(model, every)`` watches the model's *targets*: every ``nn.Linear`` and
``nn.Embedding`` called as a module, every router (its logits and gate weights), the
routed experts of every MoE block (the block's output and the stacked ``w1``/``w2``), and
for ``MoEGPT`` the LM head (the logits; its weight is tied to ``tok_emb``, measured
there). For each target it measures up to three kinds of tensor:

- ``act``: the module's forward output (router: its logits).
- ``grad``: the gradient of the module's parameters as backward produced it, i.e. still
  multiplied by the loss scale in fp16 mode: that is the value that has to fit in
  fp16. Divide by ``precision/loss_scale`` for the true gradient.
- ``weight``: the module's parameters at the start of the step.

On measured steps (``step % every == 0``, and step 1) each tensor gets an abs-max and
smallest non-zero magnitude (finite elements), a non-finite count, an exponent
histogram and, per format in ``formats.FORMATS``, the exact share that would overflow,
become subnormal or flush to zero (``formats.format_counts``). Tensors of more than
``sample_size`` elements are subsampled for the histogram and the fractions (a strided
view with a prime stride, so it does not alias with row lengths); abs-max, min non-zero
and the non-finite count always cover the whole tensor. Everything stays on the device
until ``collect()`` stacks the pending steps and copies them to the host once.

Every step, measured or not, the forward hooks also keep the min and max of each
target's output (one ``aminmax`` pass, no host sync; min and max propagate NaN), turned
into one "had an inf/NaN" flag per target after the step, so that a non-finite loss can
be traced to the first target in forward order that produced one.
Gradients are checked only when the gradient norm is non-finite (CPU, or fp16 where the
trainer syncs anyway), or with one fused per-tensor max kernel per step on other devices.

For gradients the *origin* is reported: the target nearest the loss (the first in
backward order, which is reverse forward order) whose gradient is non-finite. An
overflow in backward poisons the gradient of everything upstream of it, so the first in
*forward* order would almost always be the embedding. ``modules`` lists every target
with a non-finite gradient, in forward order.

The hooks never change a tensor and use no random numbers: a run with the monitor is
bit-identical to one without it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn
from torch import Tensor

from .formats import FORMAT_NAMES, FORMATS, LOG2_EDGES, N_BINS, OUTCOMES, _as_float, _joint_counts

KINDS = ("act", "grad", "weight")
DEFAULT_SAMPLE_SIZE = 1 << 16   # elements per tensor for histograms and fractions (see above)
_MAX_PENDING = 512               # steps of unresolved flags kept before resolving the oldest

# Layout of one tensor's statistics vector (float64, on the device).
_ABSMAX, _MIN_NZ, _N, _ZEROS, _NONFINITE = range(5)
_HIST = slice(5, 5 + N_BINS)
_FRAC0 = 5 + N_BINS


def _stat_dtype(device: torch.device) -> torch.dtype:
    # float64 keeps counts exact; MPS has no float64 (float32 is exact to 2^24 elements).
    return torch.float32 if device.type == "mps" else torch.float64


def _stat_len(n_formats: int) -> int:
    return _FRAC0 + 3 * n_formats


def _next_prime(n: int) -> int:
    def is_prime(k: int) -> bool:
        return k >= 2 and all(k % d for d in range(2, math.isqrt(k) + 1))
    while not is_prime(n):
        n += 1
    return n


def _subsample(x: Tensor, sample_size: int | None) -> Tensor:
    """x (1-d) itself, or a strided view of about ``sample_size`` elements. The stride is
    prime, so it cycles through the columns of any matrix whose width it does not divide
    (widths are powers of two and small multiples of them)."""
    n = x.numel()
    if sample_size is None or n <= sample_size:
        return x
    return x[::_next_prime(math.ceil(n / sample_size))]


@torch.no_grad()
def tensor_stats(x: Tensor, formats: tuple[str, ...] = FORMAT_NAMES,
                 sample_size: int | None = DEFAULT_SAMPLE_SIZE) -> Tensor:
    """Headroom statistics of one tensor as a float vector on x's device.

    Layout: [absmax, min_nonzero, n_measured, zeros, nonfinite, hist (N_BINS),
    counts (n_formats x 3: overflow, subnormal, flush_to_zero)]. absmax and min_nonzero
    are magnitudes over the finite elements of the whole tensor (min_nonzero = +inf when
    there is none); nonfinite counts the whole tensor; n_measured, zeros, hist and the
    format counts cover the (sub)sample.
    """
    flat = _as_float(x.detach()).reshape(-1)
    out = flat.new_zeros(_stat_len(len(formats)), dtype=_stat_dtype(flat.device))
    if flat.numel() == 0:
        out[_MIN_NZ] = math.inf
        return out
    a = flat.abs()
    lo, hi = torch.aminmax(a)     # one pass; NaN propagates into both
    if flat.device.type == "cpu" and bool(torch.isfinite(hi)) and bool(lo > 0):
        # The common case, decided for free on the CPU: no inf/NaN and no zeros.
        out[_ABSMAX], out[_MIN_NZ] = hi, lo
    else:
        finite = torch.isfinite(a)
        out[_ABSMAX] = torch.where(finite, a, 0.0).amax()
        out[_MIN_NZ] = torch.where(finite & (a > 0), a, math.inf).amin()
        out[_NONFINITE] = flat.numel() - finite.sum()
    sample = _subsample(flat, sample_size)
    hist, counts = _joint_counts(sample, formats)
    out[_N] = sample.numel()
    out[_ZEROS] = hist[N_BINS]
    out[_HIST] = hist[:N_BINS]
    out[_FRAC0:] = counts.reshape(-1)
    return out


def _merge(stats: list[Tensor]) -> Tensor:
    """One statistics vector for several tensors of one target (e.g. ``w1`` and ``w2``)."""
    if len(stats) == 1:
        return stats[0]
    v = torch.stack(stats)
    out = v.sum(dim=0)
    out[_ABSMAX] = v[:, _ABSMAX].amax()
    out[_MIN_NZ] = v[:, _MIN_NZ].amin()
    return out


# ------------------------------------------------------------------------- targets

def _first_tensor(out: Any) -> Tensor | None:
    if isinstance(out, Tensor):
        return out
    if isinstance(out, (tuple, list)):
        return next((t for t in out if isinstance(t, Tensor)), None)
    return getattr(out, "logits", None)   # RouterOutput and the like


@dataclass
class Target:
    """One measured unit: a module's output and the parameters it owns."""
    name: str
    module: nn.Module | None
    params: tuple[nn.Parameter, ...]
    output: Callable[[Any], Tensor | None] = _first_tensor


def find_targets(model: nn.Module) -> list[Target]:
    """The targets of ``model`` in ``named_modules`` order (see the module docstring)."""
    from .model import MoEGPT
    from .moe_layer import MoEFeedForward
    from .routers import Router

    targets: list[Target] = []
    owned: set[int] = set()   # Linears inside a router: the router calls F.linear on them
    for name, mod in model.named_modules():
        if isinstance(mod, Router):
            targets.append(Target(name, mod, tuple(mod.parameters())))
            owned.update(id(m) for m in mod.modules())
        elif isinstance(mod, MoEFeedForward):
            targets.append(Target(f"{name}.experts", mod, (mod.w1, mod.w2)))
        elif isinstance(mod, (nn.Linear, nn.Embedding)) and id(mod) not in owned:
            targets.append(Target(name, mod, tuple(mod.parameters(recurse=False))))
    if isinstance(model, MoEGPT):
        targets.append(Target("lm_head", model, ()))
    return targets


# ------------------------------------------------------------------------- records

@dataclass
class HeadroomRecord:
    """One measured step on the host. n = targets (forward order), K = kinds,
    F = formats. Missing (target, kind) pairs (the LM head has no weight of its own)
    have NaN magnitudes and zero counts."""
    step: int
    absmax: np.ndarray       # [n, K] float32, max |x| over finite elements
    min_nonzero: np.ndarray  # [n, K] float32, min |x| over finite non-zero elements; NaN: none
    counts: np.ndarray       # [n, K, 3] int64: elements measured (sample), zeros in it,
                             #   non-finite elements in the whole tensor
    exp_hist: np.ndarray     # [n, K, N_BINS] int32, sample counts per power-of-two bin
    fractions: np.ndarray    # [n, K, F, 3] float32, share of the sample that would
                             #   overflow / be subnormal / flush to zero; NaN if nothing measured


@dataclass
class _Pending:
    step: int
    act_flags: Tensor | None = None    # [n_targets] bool, device, discovery order
    grad_flags: Tensor | None = None   # [n_targets] bool, device
    stats: Tensor | None = None        # [n_targets, K, L] float64, device


@dataclass
class _Streak:
    """A run of consecutive steps with non-finite module outputs or gradients."""
    info: dict                        # attribution of its first step
    reported: bool = False            # already carried by an event
    ended: bool = False


class HeadroomMonitor:
    """Per-module headroom statistics and non-finite attribution for one model.

    Drive it around each optimizer step::

        mon.begin_step(step)            # before the forward; step = 1, 2, ...
        loss.backward()
        mon.after_backward()            # gradients as backward left them (scaled in fp16)
        info = mon.after_update(step, grad_norm, scaler, scale_before)  # before zero_grad
        ...
        for rec in mon.collect(): ...   # or mon.write(writer, member)

    ``every`` = 0 turns the statistics off and keeps only the non-finite flags.
    """

    def __init__(self, model: nn.Module, every: int = 10, kinds: tuple[str, ...] = KINDS, *,
                 formats: tuple[str, ...] = FORMAT_NAMES,
                 sample_size: int | None = DEFAULT_SAMPLE_SIZE,
                 targets: list[Target] | None = None, static_weights: bool = False):
        """``targets``: what to watch (default :func:`find_targets`, for MoE Studio's own
        models). ``static_weights``: the weights never change (an inspection of a
        pretrained model), so they are measured on the first measured step only and
        that measurement is repeated in later records."""
        bad = [k for k in kinds if k not in KINDS]
        if bad:
            raise ValueError(f"unknown kinds {bad} (known: {', '.join(KINDS)})")
        self.model = model
        self.every = int(every)
        self.kinds = tuple(kinds)
        self.formats = tuple(formats)
        self.sample_size = sample_size
        self.static_weights = bool(static_weights)
        self._weight_stats: dict[tuple[int, int], list[Tensor]] | None = None
        self.targets = find_targets(model) if targets is None else list(targets)
        self._n = len(self.targets)
        self._index = {t.name: i for i, t in enumerate(self.targets)}
        self._ids: dict[tuple, Tensor] = {}   # index lists as device tensors (built once)
        self._hooks = [t.module.register_forward_hook(partial(self._on_forward, i))
                       for i, t in enumerate(self.targets) if t.module is not None]
        self._fired: list[int] = []        # discovery indices in first-fire order
        self._order: list[int] | None = None
        self._armed = False
        self._measure = False
        self._extrema: list[tuple[int, Tensor, Tensor]] = []   # (target, min, max) this step
        self._stats: dict[tuple[int, int], list[Tensor]] = {}
        self._pending: list[_Pending] = []
        self._streak: _Streak | None = None     # the current (or last) streak
        self._finished: list[_Streak] = []      # earlier streaks, until reported
        self._bad_steps: dict[int, _Streak] = {}  # resolved bad step -> its streak
        self._meta_written = False

    # ------------------------------------------------------------------ lifecycle
    def remove(self) -> None:
        """Detach every hook (the monitor is unusable afterwards)."""
        for h in self._hooks:
            h.remove()
        self._hooks = []

    def measures(self, step: int) -> bool:
        """Whether statistics are taken at ``step`` (1-based, as the trainer records it)."""
        return self.every > 0 and (step % self.every == 0 or step == 1)

    @property
    def module_names(self) -> list[str]:
        """Target names in forward order (known after the first forward)."""
        return [self.targets[i].name for i in self.forward_order]

    @property
    def forward_order(self) -> list[int]:
        """Discovery indices in the order the targets' forwards completed, then the
        targets that never ran."""
        if self._order is not None:
            return self._order
        seen = set(self._fired)
        return self._fired + [i for i in range(self._n) if i not in seen]

    # ------------------------------------------------------------------ the step
    def begin_step(self, step: int) -> None:
        """Arm the hooks for the training forward of ``step``; measure the weights."""
        self._armed = True
        self._extrema = []
        self._stats = {}
        self._measure = self.measures(step)
        if self._measure and "weight" in self.kinds:
            if self.static_weights and self._weight_stats is not None:
                self._stats.update({key: list(v) for key, v in self._weight_stats.items()})
                return
            k = self.kinds.index("weight")
            for i, t in enumerate(self.targets):
                for p in t.params:
                    self._add(i, k, p)
            if self.static_weights:
                self._weight_stats = {key: list(v) for key, v in self._stats.items()}

    def _add(self, i: int, k: int, x: Tensor) -> None:
        self._stats.setdefault((i, k), []).append(
            tensor_stats(x, self.formats, self.sample_size))

    def _on_forward(self, i: int, module: nn.Module, args: Any, output: Any,
                    finite: bool = False) -> None:
        if not self._armed:
            return
        t = self.targets[i].output(output)
        if t is None or not t.is_floating_point():
            return
        if self._order is None and i not in self._fired:
            self._fired.append(i)
        with torch.no_grad():
            if t.numel() and not finite:
                # aminmax is cheaper on the CPU than isfinite(t).all(), which first
                # materialises a bool tensor; the flag is derived once per step.
                self._extrema.append((i, *torch.aminmax(t.detach())))
            if self._measure and "act" in self.kinds:
                self._add(i, self.kinds.index("act"), t)

    def observe(self, name: str, output: Any, finite: bool = False) -> None:
        """What the forward hook of target ``name`` would have seen, for a forward that
        uses the model's weights without calling its modules (the ensemble's batched
        members, ``ensemble.WideMembers``). ``finite``: the caller has already found
        every element finite (one check over all members' outputs at once), so the
        monitor skips its own. Unknown names are ignored."""
        i = self._index.get(name)
        if i is not None:
            self._on_forward(i, None, None, output, finite)

    def after_backward(self) -> None:
        """Measure the parameter gradients (call before unscaling or clipping them)."""
        if self._order is None and self._fired:
            self._order = self.forward_order
        if self._measure and "grad" in self.kinds:
            k = self.kinds.index("grad")
            for i, t in enumerate(self.targets):
                for p in t.params:
                    if p.grad is not None:
                        self._add(i, k, p.grad)

    def _id_tensor(self, ids: list[int], device: torch.device) -> Tensor:
        """``ids`` as an int64 tensor on ``device``, made once per distinct list: a fresh
        host-to-device copy every step would wait for the GPU's queued work."""
        key = (tuple(ids), str(device))
        t = self._ids.get(key)
        if t is None:
            t = self._ids[key] = torch.tensor(ids, dtype=torch.long, device=device)
        return t

    @torch.no_grad()
    def _grad_flags(self) -> Tensor:
        """[n_targets] bool: target has a parameter with a non-finite gradient."""
        device = next((p.device for t in self.targets for p in t.params), torch.device("cpu"))
        flags = torch.zeros(self._n, dtype=torch.int32, device=device)
        pairs = [(i, p.grad) for i, t in enumerate(self.targets) for p in t.params
                 if p.grad is not None]
        if not pairs:
            return flags.bool()
        owner = self._id_tensor([i for i, _ in pairs], device)
        grads = [g for _, g in pairs]
        # max |g| per tensor, inf/NaN iff g has one: one fused kernel on CUDA (the same
        # private op clip_grad_norm_ uses), a plain loop where it is missing.
        try:
            norms = torch._foreach_norm(grads, math.inf)
        except (AttributeError, RuntimeError):
            norms = [torch.linalg.vector_norm(g, math.inf) for g in grads]
        bad = ~torch.isfinite(torch.stack(norms))
        return flags.index_add_(0, owner, bad.int()) > 0

    def after_update(self, step: int, grad_norm: Tensor | float | None = None,
                     scaler: torch.amp.GradScaler | None = None,
                     scale_before: float | None = None) -> dict | None:
        """Finish ``step`` after the optimizer (and ``scaler.update()``), before the
        gradients are zeroed. Returns, for a step the GradScaler skipped, the gradient
        attribution for its skip event ({"module", "kind": "gradient", "modules"});
        otherwise None. A skipped step is not a non-finite episode: the scaler handled it.
        """
        self._armed = False
        if self._order is None and self._fired:
            self._order = self.forward_order
        p = _Pending(step=int(step))
        if self._extrema:
            device = self._extrema[0][1].device
            idx = self._id_tensor([i for i, _, _ in self._extrema], device)
            ext = torch.stack([v for _, lo, hi in self._extrema for v in (lo, hi)]).view(-1, 2)
            hits = (~torch.isfinite(ext).all(dim=1)).int()      # [outputs] had an inf/NaN
            p.act_flags = torch.zeros(self._n, dtype=torch.int32, device=device).index_add_(
                0, idx, hits) > 0
        skip_info = None
        if scaler is not None and scaler.is_enabled():
            # The trainer reads the scale every fp16 step anyway, so this sync is free.
            if scale_before is not None and scaler.get_scale() < scale_before:
                skip_info = self._grad_info(self._grad_flags().cpu().numpy())
        elif grad_norm is not None:
            gn = torch.as_tensor(grad_norm)
            if gn.device.type == "cpu":
                if not bool(torch.isfinite(gn)):     # free on the CPU
                    p.grad_flags = self._grad_flags()
            else:
                # No host read here: flags for every step, resolved only if it was bad.
                p.grad_flags = self._grad_flags()
        if self._measure:
            p.stats = self._stack_stats()
        self._pending.append(p)
        self._extrema, self._stats = [], {}
        if len(self._pending) > _MAX_PENDING:     # nobody is resolving: keep memory bounded
            cutoff = self._pending[-_MAX_PENDING // 2].step
            self._resolve(cutoff)
            self._bad_steps = {k: v for k, v in self._bad_steps.items()
                               if k > cutoff - _MAX_PENDING}
        return skip_info

    def _stack_stats(self) -> Tensor:
        L = _stat_len(len(self.formats))
        device = next(iter(self._stats.values()))[0].device if self._stats else torch.device("cpu")
        missing = torch.zeros(L, dtype=_stat_dtype(device), device=device)
        missing[_ABSMAX] = math.nan
        missing[_MIN_NZ] = math.inf
        rows = [torch.stack([_merge(self._stats[(i, k)]) if (i, k) in self._stats else missing
                             for k in range(len(self.kinds))])
                for i in range(self._n)]
        return torch.stack(rows)                               # [n, K, L]

    # ------------------------------------------------------------------ attribution
    def _grad_info(self, flags: np.ndarray) -> dict | None:
        bad = [i for i in self.forward_order if flags[i]]
        if not bad:
            return None
        return {"module": self.targets[bad[-1]].name, "kind": "gradient",
                "modules": [self.targets[i].name for i in bad]}

    def _act_info(self, flags: np.ndarray) -> dict | None:
        bad = [i for i in self.forward_order if flags[i]]
        if not bad:
            return None
        return {"module": self.targets[bad[0]].name, "kind": "activation",
                "modules": [self.targets[i].name for i in bad]}

    def _resolve(self, upto: int | None = None) -> None:
        """Read the flags of all pending steps (<= ``upto``) in one host copy and follow
        the streaks of consecutive steps with non-finite outputs or gradients."""
        todo = [p for p in self._pending if (upto is None or p.step <= upto) and
                (p.act_flags is not None or p.grad_flags is not None)]
        if not todo:
            return
        rows = []
        for p in todo:
            some = p.act_flags if p.act_flags is not None else p.grad_flags
            clean = torch.zeros_like(some)
            rows.append(torch.stack([p.act_flags if p.act_flags is not None else clean,
                                     p.grad_flags if p.grad_flags is not None else clean]))
        host = torch.stack(rows).cpu().numpy()               # [steps, 2, n_targets]
        for p, (act, grad) in zip(todo, host):
            p.act_flags = p.grad_flags = None
            info = self._act_info(act) or self._grad_info(grad)
            s = self._streak
            if info is None:
                if s is not None:
                    s.ended = True
                continue
            if s is None or s.ended:
                if s is not None:
                    self._finished.append(s)
                s = self._streak = _Streak(info={**info, "step": p.step})
            self._bad_steps[p.step] = s
        self._pending = [p for p in self._pending
                         if p.stats is not None or p.act_flags is not None or p.grad_flags is not None]

    def attribute(self, step: int) -> dict | None:
        """Where the non-finite values of ``step`` came from, for the trainer's event.

        Returns the attribution of the first step of the streak of non-finite steps that
        ``step`` belongs to: ``{"module", "kind": "activation" | "gradient", "step",
        "modules"}``, or None when no target produced an inf/NaN at ``step`` (the loss
        itself overflowed). Marks the streak as reported. Steps are expected in order.
        """
        self._resolve()
        s = self._bad_steps.get(step)
        self._bad_steps = {k: v for k, v in self._bad_steps.items() if k > step}
        if s is None:
            return None
        s.reported = True
        return dict(s.info)

    def unreported(self, upto: int) -> list[dict]:
        """Attributions of the streaks that began at or before ``upto`` and that no
        trainer event carried (non-finite outputs or gradients on steps whose training
        scalars were not logged, or stayed finite), oldest first. Marks them reported."""
        self._resolve(upto)
        streaks = [s for s in self._finished + [self._streak]
                   if s is not None and not s.reported and s.info["step"] <= upto]
        self._finished = [s for s in self._finished if not s.reported and s.info["step"] > upto]
        self._bad_steps = {k: v for k, v in self._bad_steps.items() if k > upto}
        for s in streaks:
            s.reported = True
        return [dict(s.info) for s in streaks]

    # ------------------------------------------------------------------ records
    def collect(self) -> list[HeadroomRecord]:
        """Host records of all measured steps not yet collected, oldest first: one
        device-to-host copy for the lot. Non-finite flags stay until resolved."""
        measured = [(p.step, p.stats) for p in self._pending if p.stats is not None]
        for p in self._pending:
            p.stats = None
        self._pending = [p for p in self._pending
                         if p.act_flags is not None or p.grad_flags is not None]
        if not measured:
            return []
        host = torch.stack([st for _, st in measured]).cpu().numpy()   # [R, n, K, L]
        order = self.forward_order
        out = []
        F = len(self.formats)
        for (step, _), s in zip(measured, host):
            s = s[order]
            n = s[..., _N]
            with np.errstate(invalid="ignore", divide="ignore"):
                frac = s[..., _FRAC0:].reshape(*s.shape[:2], F, 3) / n[..., None, None]
            frac[n == 0] = np.nan
            min_nz = np.where(np.isinf(s[..., _MIN_NZ]), np.nan, s[..., _MIN_NZ])
            out.append(HeadroomRecord(
                step=step,
                absmax=s[..., _ABSMAX].astype(np.float32),
                min_nonzero=min_nz.astype(np.float32),
                counts=np.rint(s[..., [_N, _ZEROS, _NONFINITE]]).astype(np.int64),
                exp_hist=np.rint(s[..., _HIST]).astype(np.int32),
                fractions=frac.astype(np.float32)))
        return out

    def meta(self) -> dict:
        """What a reader needs to interpret the records (written once as run meta)."""
        return {
            "precision_modules": self.module_names,
            "precision_kinds": list(self.kinds),
            "precision_formats": list(self.formats),
            "precision_outcomes": list(OUTCOMES),
            "precision_format_table": {f: FORMATS[f].as_dict() for f in self.formats},
            "precision_log2_edges": [int(e) for e in LOG2_EDGES],
            "precision_every": self.every,
            "precision_sample_size": self.sample_size,
        }

    def write(self, writer, member: int = 0, upto: int | None = None) -> list[dict]:
        """Record everything pending to the store (a ``moe_studio.store.RunWriter``).

        Tensors per measured step: ``precision/absmax`` [n, K] float32,
        ``precision/min_nonzero`` [n, K] float32, ``precision/counts`` [n, K, 3] int64,
        ``precision/exp_hist`` [n, K, N_BINS] int32, ``precision/fractions`` [n, K, F, 3]
        float32; scalars ``precision/max_{kind}_absmax``, ``precision/min_{kind}_nonzero``
        and ``precision/worst_{format}_{outcome}`` (max over targets and kinds); the meta
        (``meta()``) on the first call. With ``upto`` (the last completed step), also a
        ``nonfinite`` event for every streak no one reported; returns their attributions.
        """
        records = self.collect()
        if records and not self._meta_written:
            writer.set_meta(**self.meta())
            self._meta_written = True
        for r in records:
            writer.add_tensor(r.step, "precision/absmax", r.absmax, member=member)
            writer.add_tensor(r.step, "precision/min_nonzero", r.min_nonzero, member=member)
            writer.add_tensor(r.step, "precision/counts", r.counts, member=member)
            writer.add_tensor(r.step, "precision/exp_hist", r.exp_hist, member=member)
            writer.add_tensor(r.step, "precision/fractions", r.fractions, member=member)
            writer.add_scalars(r.step, summary_scalars(r, self.kinds, self.formats), member=member)
        infos = self.unreported(upto) if upto is not None else []
        for info in infos:
            msg, data = nonfinite_event(info["step"], [], info)
            writer.add_event(info["step"], "nonfinite", msg, data, member=member)
        return infos


def summary_scalars(r: HeadroomRecord, kinds: tuple[str, ...] = KINDS,
                    formats: tuple[str, ...] = FORMAT_NAMES) -> dict[str, float]:
    """Quick curves from one record: the worst target per kind and per format/outcome."""
    out: dict[str, float] = {}
    with np.errstate(all="ignore"):
        for k, kind in enumerate(kinds):
            amax, mnz = r.absmax[:, k], r.min_nonzero[:, k]
            if not np.isnan(amax).all():
                out[f"precision/max_{kind}_absmax"] = float(np.nanmax(amax))
            if not np.isnan(mnz).all():
                out[f"precision/min_{kind}_nonzero"] = float(np.nanmin(mnz))
        for f, fmt in enumerate(formats):
            for o, outcome in enumerate(OUTCOMES):
                v = r.fractions[:, :, f, o]
                if not np.isnan(v).all():
                    out[f"precision/worst_{fmt}_{outcome}"] = float(np.nanmax(v))
    return out


def nonfinite_event(step: int, bad: list[str], info: dict | None) -> tuple[str, dict]:
    """Message and data of a ``nonfinite`` event recorded at ``step``.

    ``bad``: the non-finite training scalars (empty when only a module output or gradient
    was non-finite); ``info``: the monitor's attribution, or None when no watched module
    produced an inf/NaN (then the loss computation itself overflowed: kind "loss").
    ``data["step"]`` is the step where the streak of non-finite steps began.
    """
    what = f"non-finite {', '.join(bad)}" if bad else "non-finite values"
    data: dict[str, Any] = {"names": list(bad), "module": None, "kind": "loss", "step": step}
    if info is None:
        return f"{what} at step {step}", data
    data.update(info)
    where, order = (("activation", "first in forward order") if info["kind"] == "activation"
                    else ("gradient", "nearest the loss"))
    since = f", since step {info['step']}" if info["step"] != step else ""
    return f"{what} at step {step}: {where} of {info['module']} ({order}{since})", data
