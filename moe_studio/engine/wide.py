"""The forward pass of M same-architecture members as one wide model.

Parallel ensembles (seeds, bagging) batch the members' forward and backward into one
pass: the dense parts of all members run as batched matmuls over a leading member
axis ([M, B*T, d] @ [M, d, d']) and one attention call over M*B sequences; an MoE
block runs each member's own ``MoEFeedForward`` on its slice (its sort-based dispatch
has data-dependent shapes). The member parameters stay the members' own leaves,
stacked afresh every step, so autograd fills each member's .grad and everything after
the backward (unscale, clipping, optimizer, monitor, records) is the per-member code
of the trainer. Chosen by measurement over ``torch.func.vmap`` + ``functional_call``,
which fell back to a per-sample loop for the CPU attention kernel and was slower than
the plain loop (see ``bench/ensemble.py``).
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .activations import activate
from .model import CausalSelfAttention, MoEGPT
from .moe_layer import FeedForward, MoEFeedForward

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
                f = torch.bmm(activate(u, blk.ffn.act),
                              self._st(p + "ffn.down_proj.weight").transpose(1, 2))
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
