"""Router outputs captured by forward hooks, and the per-step routing statistics taken
from them on the device (one host copy per step).

The hooks only read: a model with them computes exactly what it computes without them.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
from torch import Tensor, nn

from ..headroom import Target
from ..routers import load_balancing_loss, router_z_loss
from ..stats import BLOCK_STATS
from .families import Family, RouterSite, decode, router_probs

HIST_BINS = 50   # router-probability histogram bins over 0..1, as the trainer writes them


@dataclass
class Routed:
    """One router's decision for the T tokens of a forward."""
    logits: Tensor           # [T, E] float32
    probs: Tensor            # [T, E] float32, distribution over experts (families.py)
    topk_idx: Tensor         # [T, k] int64, the experts the model ran
    topk_weight: Tensor      # [T, k] float32, the weights it combined them with
    kept: Tensor | None      # [T, k] bool, False: dropped over capacity (None: no drops)


class RouterCapture:
    """Forward hooks on every router site; ``take()`` returns what the last forward
    routed, one :class:`Routed` per site, in site order."""

    def __init__(self, sites: list[RouterSite], family: Family):
        self.sites = sites
        self.family = family
        self._out: list[tuple | None] = [None] * len(sites)
        self._logits: list = [None] * len(sites)   # "logits" layout: until the experts run
        self._hooks = [s.module.register_forward_hook(partial(self._hook, j))
                       for j, s in enumerate(sites)]
        self._hooks += [s.decision.register_forward_pre_hook(partial(self._decided, j),
                                                             with_kwargs=True)
                        for j, s in enumerate(sites) if s.decision is not None]
        # (a child runs, and its hook fires, before its router's own hook)
        self._child_logits: list = [None] * len(sites)
        self._hooks += [s.logits_module.register_forward_hook(partial(self._child, j))
                        for j, s in enumerate(sites) if s.logits_module is not None]

    def _child(self, j: int, module: nn.Module, args, output) -> None:
        self._child_logits[j] = output

    def _hook(self, j: int, module: nn.Module, args, output) -> None:
        if self.sites[j].decision is not None:
            self._logits[j] = output
            return
        out = decode(self.family, output, self.sites[j].top_k)
        if self.sites[j].logits_module is not None:
            # the router returned probabilities where the logits go: its child's output
            # are the logits they were computed from
            logits, self._child_logits[j] = self._child_logits[j], None
            out = (logits.reshape(-1, out[0].shape[-1]).float(), *out[1:])
        self._out[j] = out

    def _decided(self, j: int, module: nn.Module, args, kwargs) -> None:
        """The experts' inputs ``(hidden, top_k_index, top_k_weights)``: the choice the
        block made from the logits its router returned just before."""
        logits, self._logits[j] = self._logits[j], None
        if logits is None:
            return
        idx = args[1] if len(args) > 1 else kwargs["top_k_index"]
        w = args[2] if len(args) > 2 else kwargs["top_k_weights"]
        self._out[j] = decode(self.family, (logits, idx, w), self.sites[j].top_k)

    def take(self) -> list[Routed]:
        missing = [self.sites[j].name for j, o in enumerate(self._out) if o is None]
        if missing:
            raise RuntimeError(f"router {missing[0]} did not run in this forward")
        out = []
        for site, (logits, idx, w, kept) in zip(self.sites, self._out):  # type: ignore[misc]
            out.append(Routed(logits, router_probs(site.scoring, logits), idx, w, kept))
        self._out = [None] * len(self.sites)
        return out

    def remove(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks = []


@dataclass
class StepStats:
    """One step's statistics, on the host."""
    block_stats: "object"        # float64 [n_blocks, len(BLOCK_STATS)]
    tokens_per_expert: "object"  # float32 [n_blocks, E] (each of a token's k choices)
    dropped_per_expert: "object"  # float32 [n_blocks, E]
    hist: "object"               # int64 [n_blocks, HIST_BINS]


class RoutingAccumulator:
    """Per-step statistics plus totals over the whole inspection, kept on the device:
    expert load per domain [D, n_blocks, E] and co-selection counts [n_blocks, E, E]
    (entry (i, j): tokens that chose both i and j among their top-k; diagonal: tokens
    that chose i)."""

    def __init__(self, n_blocks: int, n_experts: int, n_domains: int, device: torch.device):
        # float64 keeps counts exact far beyond 2^24 tokens (MPS has no float64)
        dt = torch.float32 if device.type == "mps" else torch.float64
        self.n_experts = n_experts
        self.load_per_domain = torch.zeros(n_domains, n_blocks, n_experts, dtype=dt, device=device)
        self.tokens_per_domain = torch.zeros(n_domains, dtype=dt, device=device)
        self.coselect = torch.zeros(n_blocks, n_experts, n_experts, dtype=dt, device=device)

    @torch.no_grad()
    def add(self, routed: list[Routed], domains: Tensor) -> StepStats:
        """Statistics of one forward. ``domains``: int64 [T], the domain of each token."""
        E = self.n_experts
        stats, tpe, dpe, hist = [], [], [], []
        for b, r in enumerate(routed):
            idx = r.topk_idx
            onehot = torch.zeros(idx.shape[0], E, dtype=torch.float32, device=idx.device)
            onehot.scatter_(1, idx, 1.0)
            counts = onehot.sum(dim=0)
            if r.kept is not None:
                dropped = torch.zeros(E, dtype=torch.float32, device=idx.device).index_add_(
                    0, idx[~r.kept], torch.ones_like(idx[~r.kept], dtype=torch.float32))
            else:
                dropped = torch.zeros(E, dtype=torch.float32, device=idx.device)
            a = r.logits.abs()
            stats.append(torch.stack([
                torch.special.entr(r.probs).sum(dim=-1).mean(), r.probs.max(dim=-1).values.mean(),
                a.mean(), a.max(), load_balancing_loss(r.probs, idx, E), router_z_loss(r.logits)]))
            tpe.append(counts)
            dpe.append(dropped)
            hist.append(torch.histc(r.probs, bins=HIST_BINS, min=0.0, max=1.0))
            self.load_per_domain[:, b].index_add_(0, domains, onehot.to(self.load_per_domain.dtype))
            self.coselect[b] += (onehot.T @ onehot).to(self.coselect.dtype)
        self.tokens_per_domain.index_add_(0, domains, torch.ones_like(domains, dtype=self.tokens_per_domain.dtype))
        flat = torch.cat([torch.stack(stats).double().reshape(-1), torch.stack(tpe).double().reshape(-1),
                          torch.stack(dpe).double().reshape(-1), torch.stack(hist).double().reshape(-1)])
        host = flat.cpu().numpy()
        n = len(routed)
        s0 = n * len(BLOCK_STATS)
        s1 = s0 + n * E
        s2 = s1 + n * E
        return StepStats(block_stats=host[:s0].reshape(n, len(BLOCK_STATS)),
                         tokens_per_expert=host[s0:s1].reshape(n, E).astype("float32"),
                         dropped_per_expert=host[s1:s2].reshape(n, E).astype("float32"),
                         hist=host[s2:].reshape(n, HIST_BINS).round().astype("int64"))


def precision_targets(model: nn.Module, sites: list[RouterSite]) -> list[Target]:
    """What the precision headroom watches in a Hugging Face model, in module order:
    every ``nn.Linear`` and ``nn.Embedding`` (its output and weight), every router (its
    logits and weight), every module holding stacked expert weights (3-d parameters:
    the routed experts' combined output and their weights) and, per expert, the experts
    kept as 2-d row blocks (:func:`expert_rows`: ``{name}.{e}``, expert e's output and
    its rows of each weight; the output comes from :class:`ExpertRowsWatch`)."""
    routers = {id(s.module) for s in sites}
    rows = {id(r.module): r for r in expert_rows(model, sites)}
    owned: set[int] = set()
    targets: list[Target] = []
    for name, mod in model.named_modules():
        if id(mod) in routers and not any(isinstance(c, nn.Linear) for c in mod.modules()):
            # (a router built on an nn.Linear, like Switch's, is watched through it)
            own = tuple(mod.parameters())
            owned.update(id(m) for m in mod.modules())
            targets.append(Target(name, mod, own))
        elif isinstance(mod, (nn.Linear, nn.Embedding)) and id(mod) not in owned:
            targets.append(Target(name, mod, tuple(mod.parameters(recurse=False))))
        elif id(mod) in rows:
            r = rows[id(mod)]
            # (no module: the watch tells the monitor which expert each call ran)
            targets += [Target(r.target_name(e), None, r.slices(e)) for e in range(r.n_experts)]
        else:
            own = tuple(p for p in mod.parameters(recurse=False) if p.dim() >= 3)
            if own:
                targets.append(Target(name, mod, own))
    return targets


@dataclass
class ExpertRows:
    """A module of an MoE block that keeps its E routed experts' weights as 2-d
    parameters of E stacked row blocks, [E*h, d] (DBRX's ``ffn.experts.mlp``: ``w1``,
    ``v1``, ``w2``), and is called once per expert with views of that expert's rows."""
    name: str
    module: nn.Module
    params: tuple[nn.Parameter, ...]
    n_experts: int

    def target_name(self, e: int) -> str:
        return f"{self.name}.{e}"

    def slices(self, e: int) -> tuple[Tensor, ...]:
        """Expert e's rows of every parameter: [h, d] views."""
        return tuple(p.view(self.n_experts, -1, p.shape[-1])[e] for p in self.params)

    def expert_of(self, args) -> int | None:
        """The expert whose rows a call was given: a tensor argument that views one of
        the parameters, by where in it the view starts."""
        for a in args:
            if not isinstance(a, Tensor):
                continue
            for p in self.params:
                if a.untyped_storage().data_ptr() == p.untyped_storage().data_ptr():
                    rows = p.numel() // self.n_experts
                    return (a.storage_offset() - p.storage_offset()) // rows
        return None


def expert_rows(model: nn.Module, sites: list[RouterSite]) -> list[ExpertRows]:
    """The modules of the routers' MoE blocks (each router's parent) whose own
    parameters are all 2-d with a row count that is a multiple (at least twice) of the
    block's expert count: experts kept as [E*h, d] row blocks. Routers, and the linear
    and embedding layers watched whole, are not among them."""
    modules = dict(model.named_modules())
    skip = {id(m) for s in sites for m in s.module.modules()}
    found: dict[int, ExpertRows] = {}
    for s in sites:
        block_name = s.name.rpartition(".")[0]
        block = modules.get(block_name)
        if block is None:
            continue
        for sub, mod in block.named_modules(prefix=block_name):
            if id(mod) in skip or id(mod) in found or isinstance(mod, (nn.Linear, nn.Embedding)):
                continue
            own = tuple(mod.parameters(recurse=False))
            E = s.n_experts
            if own and all(p.dim() == 2 and p.shape[0] % E == 0 and p.shape[0] >= 2 * E
                           for p in own):
                found[id(mod)] = ExpertRows(sub, mod, own, E)
    return list(found.values())


class ExpertRowsWatch:
    """Forward hooks that hand each call of an :class:`ExpertRows` module to the
    headroom monitor as the output of the expert whose rows it was given (the monitor
    keeps one target per expert; the hooks only read)."""

    def __init__(self, rows: list[ExpertRows], monitor) -> None:
        self._hooks = [r.module.register_forward_hook(partial(self._called, r)) for r in rows]
        self.monitor = monitor

    def _called(self, r: ExpertRows, module: nn.Module, args, output) -> None:
        e = r.expert_of(args)
        if e is not None:
            self.monitor.observe(r.target_name(e), output)

    def remove(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks = []
