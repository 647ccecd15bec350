"""The plain-PyTorch reference trainer the engine's figures are measured against.

What a careful minimal GPT trainer does, and nothing else: pre-norm blocks with
``scaled_dot_product_attention``, learned positions, the token embedding tied to the LM
head, GPT-2 init (residual projections scaled by 1/sqrt(2 * layers)), AdamW (betas 0.9,
0.95, decay on matrices only) with the fused kernel where the build has it, gradient
clipping, linear warm-up + cosine learning rate, the training text on the device and
batches drawn there (one ``randint`` and one gather, no Python loop over rows), and no
host read on a training step: the loss comes back only when asked for.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


class _PlainBlock(nn.Module):
    def __init__(self, d: int, h: int, ff: int):
        super().__init__()
        self.h = h
        self.ln1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.proj = nn.Linear(d, d, bias=False)
        self.ln2 = nn.LayerNorm(d)
        self.up = nn.Linear(d, ff, bias=False)
        self.down = nn.Linear(ff, d, bias=False)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=2)
        q, k, v = (z.view(b, t, self.h, d // self.h).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(b, t, d))
        return x + self.down(F.gelu(self.up(self.ln2(x))))


class PlainGPT(nn.Module):
    """The smallest honest GPT: the baseline our engine must keep up with."""

    def __init__(self, n_layers=4, n_heads=4, d=128, ff=512, context=64, vocab=256):
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Embedding(context, d)
        self.blocks = nn.ModuleList(_PlainBlock(d, n_heads, ff) for _ in range(n_layers))
        self.ln = nn.LayerNorm(d)
        resid = 0.02 / math.sqrt(2 * n_layers)
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                nn.init.normal_(p, std=resid if name.endswith(("proj.weight", "down.weight")) else 0.02)

    def forward(self, idx, targets=None):
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1], device=idx.device))
        for b in self.blocks:
            x = b(x)
        logits = F.linear(self.ln(x), self.tok.weight)
        if targets is None:
            return logits
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))


def _adamw(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and not n.startswith("pos")]
    rest = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and not n.startswith("pos"))]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]
    try:
        return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), foreach=True)


class PlainLoop:
    """A minimal training loop over ``tokens`` (uint8 / int array), stepped by the caller
    so that a benchmark can interleave it with other trainers. ``steps`` sizes the cosine
    schedule (``lr`` peak, ``min_lr`` floor, ``warmup`` steps)."""

    def __init__(self, tokens: np.ndarray, *, batch: int = 12, context: int = 64,
                 lr: float = 3e-3, min_lr: float = 3e-4, warmup: int = 100, steps: int = 2000,
                 weight_decay: float = 0.1, grad_clip: float = 1.0, seed: int = 0,
                 device: str | torch.device = "cpu", **model_kw):
        torch.manual_seed(seed)
        self.device = torch.device(device)
        self.batch, self.context = batch, context
        self.model = PlainGPT(context=context, **model_kw).to(self.device)
        self.opt = _adamw(self.model, lr, weight_decay)
        self.lr, self.min_lr, self.warmup, self.steps = lr, min_lr, warmup, steps
        self.grad_clip = grad_clip
        self.data = torch.as_tensor(np.asarray(tokens), dtype=torch.long).to(self.device)
        self.offsets = torch.arange(context + 1, device=self.device)
        self.gen = torch.Generator(device=self.device).manual_seed(seed)
        self.step_count = 0
        self.last_loss: torch.Tensor | None = None

    def lr_at(self, step: int) -> float:
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        frac = min(1.0, (step - self.warmup) / max(1, self.steps - self.warmup))
        return self.min_lr + 0.5 * (self.lr - self.min_lr) * (1.0 + math.cos(math.pi * frac))

    def step(self) -> None:
        starts = torch.randint(len(self.data) - self.context - 1, (self.batch, 1),
                               generator=self.gen, device=self.device)
        win = self.data[starts + self.offsets]            # [B, context + 1]
        loss = self.model(win[:, :-1], win[:, 1:])
        loss.backward()
        if self.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        for g in self.opt.param_groups:
            g["lr"] = self.lr_at(self.step_count)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.last_loss = loss.detach()
        self.step_count += 1

    @torch.no_grad()
    def evaluate(self, batches: list[tuple[np.ndarray, np.ndarray]]) -> float:
        """Mean next-token loss (nats) over fixed ``(x, y)`` batches."""
        self.model.eval()
        nll, n = 0.0, 0
        try:
            for x, y in batches:
                x = torch.from_numpy(x).to(self.device)
                y = torch.from_numpy(y).to(self.device)
                logits = self.model(x)
                nll += float(F.cross_entropy(logits.view(-1, logits.size(-1)), y.reshape(-1),
                                             reduction="sum"))
                n += y.numel()
        finally:
            self.model.train()
        return nll / n
