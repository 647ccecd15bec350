"""MoEGPT: a small GPT-style decoder whose feed-forward blocks can be Mixtures of Experts.

Pre-norm blocks (LayerNorm with bias), causal self-attention through
``F.scaled_dot_product_attention``, learned position embeddings, token embedding tied
to the LM head. The blocks named by ``model.moe_layers`` use ``MoEFeedForward``; the
others a dense ``FeedForward``. A dense model is the same code with no MoE blocks, so
dense and MoE runs differ only where the config says they do.

The parameter count matches ``engine.params.count_params`` exactly (tested).
"""
from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..config.schema import ModelConfig, MoEConfig
from ..config.validate import parse_layer_set
from .moe_layer import FeedForward, MoEFeedForward
from .routers import AuxFreeRouter


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention, x [B, T, d] -> [B, T, d]; no biases."""

    def __init__(self, d_model: int, n_heads: int, dropout: float):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.n_heads = n_heads
        self.dropout = dropout
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.out_proj = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        B, T, d = x.shape
        # [B, T, 3d] -> 3 x [B, n_heads, T, d_head]
        q, k, v = (t.view(B, T, self.n_heads, d // self.n_heads).transpose(1, 2)
                   for t in self.qkv(x).split(d, dim=2))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.out_proj(y.transpose(1, 2).reshape(B, T, d))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(ln1(x)), then + ffn(ln2(x)). [B, T, d] -> same."""

    def __init__(self, model_cfg: ModelConfig, moe_cfg: MoEConfig, use_moe: bool):
        super().__init__()
        d = model_cfg.d_model
        self.ln1 = nn.LayerNorm(d)
        self.attn = CausalSelfAttention(d, model_cfg.n_heads, model_cfg.dropout)
        self.ln2 = nn.LayerNorm(d)
        self.ffn: nn.Module = (MoEFeedForward(d, moe_cfg, model_cfg.d_ff) if use_moe
                               else FeedForward(d, model_cfg.d_ff, model_cfg.ffn_act))
        self.drop = nn.Dropout(model_cfg.dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop(self.attn(self.ln1(x)))
        return x + self.drop(self.ffn(self.ln2(x)))


def train_mode(model: nn.Module) -> None:
    """``model.train()`` unless it is already training. The engine only switches whole
    models (``train()`` / ``eval()`` / ``train(was)`` on the root), so the root's flag
    speaks for every submodule; ``train()`` walks the whole tree, twice per member per
    step otherwise."""
    if not model.training:
        model.train()


class MoEGPT(nn.Module):
    """Byte-level GPT with optional MoE feed-forward blocks.

    ``forward(idx [B, T] int64, targets [B, T] int64 | None)`` returns
    ``(logits [B, T, vocab], loss)`` with ``loss`` the mean next-token cross-entropy in
    nats (targets equal to -1 are ignored), or None without targets. T <= ``context``.
    """

    def __init__(self, model_cfg: ModelConfig, moe_cfg: MoEConfig, context: int, vocab: int = 256):
        super().__init__()
        self.context = context
        self.vocab = vocab
        self.n_layers = model_cfg.n_layers
        moe_idx = set(parse_layer_set(model_cfg.moe_layers, model_cfg.n_layers))
        d = model_cfg.d_model
        self.tok_emb = nn.Embedding(vocab, d)   # also the LM head (tied)
        self.pos_emb = nn.Embedding(context, d)
        self.drop = nn.Dropout(model_cfg.dropout)
        self.blocks = nn.ModuleList(Block(model_cfg, moe_cfg, i in moe_idx)
                                    for i in range(model_cfg.n_layers))
        self.ln_f = nn.LayerNorm(d)
        self._init_weights()

    def _init_weights(self) -> None:
        # nanoGPT / GPT-2: N(0, 0.02) everywhere, and the projections that write into the
        # residual stream scaled by 1/sqrt(2 * n_layers), since 2 * n_layers of them add
        # up there. LayerNorms (the only 1-d parameters) keep weight 1, bias 0.
        resid_std = 0.02 / math.sqrt(2 * self.n_layers)
        for name, p in self.named_parameters():
            if p.dim() < 2:
                continue
            residual = name.endswith(("out_proj.weight", "down_proj.weight", "ffn.w2"))
            nn.init.normal_(p, mean=0.0, std=resid_std if residual else 0.02)

    def forward(self, idx: Tensor, targets: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        B, T = idx.shape
        if T > self.context:
            raise ValueError(f"sequence of {T} tokens is longer than the context ({self.context})")
        pos = torch.arange(T, device=idx.device)
        x = self.drop(self.tok_emb(idx) + self.pos_emb(pos))   # [B, T, d]
        for block in self.blocks:
            x = block(x)
        logits = F.linear(self.ln_f(x), self.tok_emb.weight)    # [B, T, V]
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.float().view(B * T, -1), targets.reshape(B * T),
                               ignore_index=-1)
        return logits, loss

    # --- MoE blocks ------------------------------------------------------------------

    @property
    def moe_blocks(self) -> dict[int, MoEFeedForward]:
        """{block index: its MoE feed-forward}, in block order (empty for a dense model)."""
        return {i: b.ffn for i, b in enumerate(self.blocks) if isinstance(b.ffn, MoEFeedForward)}

    def _sum_over_moe(self, attr: str) -> Tensor:
        terms = [getattr(m, attr) for m in self.moe_blocks.values()]
        terms = [t for t in terms if t is not None]
        if not terms:
            return self.tok_emb.weight.new_zeros(())
        return torch.stack(terms).sum()

    def aux_loss(self) -> Tensor:
        """Sum of the MoE blocks' load-balancing losses of the last forward (0-dim, with
        grad); 0.0 for a dense model. Unweighted: the trainer applies aux_loss_coef."""
        return self._sum_over_moe("aux_loss")

    def z_loss(self) -> Tensor:
        """Sum of the MoE blocks' router z-losses of the last forward (0-dim, with grad)."""
        return self._sum_over_moe("z_loss")

    def set_collect_stats(self, on: bool) -> None:
        """Switch the per-layer routing statistics (``MoEFeedForward.last``) on or off."""
        for m in self.moe_blocks.values():
            m.collect_stats = on

    def router_biases(self) -> Tensor | None:
        """[n_moe_blocks, E] biases of aux_free routers, or None for other routers."""
        biases = [m.router.bias for m in self.moe_blocks.values()
                  if isinstance(m.router, AuxFreeRouter)]
        return torch.stack(biases).detach() if biases else None

    @torch.no_grad()
    def update_router_biases(self) -> None:
        """Move every aux_free router's bias after an optimizer step, from the loads of the
        last forward. Under torch.distributed the loads are summed over ranks first, so
        that all replicas keep identical biases. No-op for other routers."""
        for m in self.moe_blocks.values():
            if not isinstance(m.router, AuxFreeRouter) or m.tokens_per_expert is None:
                continue
            load = m.tokens_per_expert
            if dist.is_available() and dist.is_initialized():
                load = load.clone()
                dist.all_reduce(load)
            m.router.update_bias(load)
