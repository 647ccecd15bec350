"""``moe-studio bench engine``: training throughput of the real Trainer (store writes
included) for the default dense and MoE configs, the cost of statistics collection, and
a minimal plain-PyTorch GPT training loop of the same size as the reference.

The precision headroom analysis is off here (it is on by default, every 10 steps, and
``moe-studio bench precision`` measures its cost on its own); routing statistics and
store writes are on, as in every run.

Every configuration runs in interleaved rounds (A, B, C, A, B, C, ...) so a noisy,
shared machine slows all of them alike; the median per configuration is reported.
"""
from __future__ import annotations

import math
import statistics
import tempfile
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import presets
from ._common import timing_config


class _PlainBlock(nn.Module):
    def __init__(self, d: int, h: int, ff: int):
        super().__init__()
        self.h = h
        self.ln1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.proj = nn.Linear(d, d, bias=False)
        self.ln2 = nn.LayerNorm(d)
        self.fc = nn.Sequential(nn.Linear(d, ff, bias=False), nn.GELU(), nn.Linear(ff, d, bias=False))

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=2)
        q, k, v = (z.view(b, t, self.h, d // self.h).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(b, t, d))
        return x + self.fc(self.ln2(x))


class PlainGPT(nn.Module):
    """The smallest honest GPT: the baseline our engine must keep up with."""

    def __init__(self, n_layers=4, n_heads=4, d=128, ff=512, context=64, vocab=256):
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Embedding(context, d)
        self.blocks = nn.ModuleList(_PlainBlock(d, n_heads, ff) for _ in range(n_layers))
        self.ln = nn.LayerNorm(d)

    def forward(self, idx, targets):
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1], device=idx.device))
        for b in self.blocks:
            x = b(x)
        logits = self.ln(x) @ self.tok.weight.T
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


def _plain_loop(steps: int, batch: int, context: int, tokens) -> float:
    """tokens/s of a minimal training loop (AdamW, clip, random windows)."""
    torch.manual_seed(0)
    model = PlainGPT(context=context)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.1, betas=(0.9, 0.95))
    data = torch.as_tensor(tokens, dtype=torch.long)
    n = len(data) - context - 1

    def one():
        ix = torch.randint(n, (batch,))
        x = torch.stack([data[i:i + context] for i in ix])
        y = torch.stack([data[i + 1:i + 1 + context] for i in ix])
        loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    for _ in range(3):
        one()
    t0 = time.perf_counter()
    for _ in range(steps):
        one()
    return steps * batch * context / (time.perf_counter() - t0)


def _trainer_tps(cfg, steps: int, runs_dir: str) -> float:
    from ..engine.trainer import Trainer

    tr = Trainer(timing_config(cfg, steps), runs_dir=runs_dir)
    try:
        for _ in range(3):
            tr.step()
        t0 = time.perf_counter()
        for _ in range(steps):
            tr.step()
        dt = time.perf_counter() - t0
    finally:
        tr.close("stopped")
    return steps * cfg.data.batch_size * cfg.data.context * cfg.ensemble.members / dt


def run(json_out: bool = True, quick: bool = False) -> dict:
    from ..data import load_corpus

    steps = 5 if quick else 60
    rounds = 1 if quick else 3
    torch.set_num_threads(max(1, torch.get_num_threads()))
    corpus = load_corpus("embedded", context=64)

    def dense():
        c = presets.dense_baseline()
        c.precision.headroom = False
        c.train.device = "cpu" if not torch.cuda.is_available() else "auto"
        return c

    def moe(stats: bool):
        c = presets.mixtral_top2()
        c.train.collect_stats = stats
        c.precision.headroom = False
        c.train.device = "cpu" if not torch.cuda.is_available() else "auto"
        return c

    results: dict[str, list[float]] = {k: [] for k in
                                       ("plain_gpt", "dense", "moe_stats_on", "moe_stats_off")}
    with tempfile.TemporaryDirectory() as runs:
        for _ in range(rounds):
            results["plain_gpt"].append(_plain_loop(steps, 12, 64, corpus.train_tokens))
            results["dense"].append(_trainer_tps(dense(), steps, runs))
            results["moe_stats_on"].append(_trainer_tps(moe(True), steps, runs))
            results["moe_stats_off"].append(_trainer_tps(moe(False), steps, runs))
    med = {k: statistics.median(v) for k, v in results.items()}
    out = {
        "benchmark": "engine",
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "steps_per_round": steps, "rounds": rounds,
        "tokens_per_s": {k: round(v, 1) for k, v in med.items()},
        "dense_vs_plain_gpt": round(med["dense"] / med["plain_gpt"], 3),
        "stats_cost_fraction": round(1.0 - med["moe_stats_on"] / med["moe_stats_off"], 4)
        if med["moe_stats_off"] > 0 else math.nan,
        "budgets": {"dense_vs_plain_gpt >= 1.0": med["dense"] >= med["plain_gpt"],
                    "stats_cost_fraction <= 0.05": med["moe_stats_on"] >= 0.95 * med["moe_stats_off"]},
    }
    if not json_out:
        for k, v in out.items():
            print(f"{k}: {v}")
    return out
