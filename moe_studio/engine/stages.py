"""Staged training: which parameters each stage of ``train.stages`` freezes.

A frozen parameter gets ``requires_grad = False``: no gradient is computed for it,
and AdamW leaves a parameter without a gradient alone (no update, no weight decay),
so its moments wait unchanged for the stage that trains it again.
"""
from __future__ import annotations

from torch import nn

from ..config.stages import Stage, parse_stages


def part_of(name: str) -> str | None:
    """Which freezable part a parameter of ``MoEGPT`` belongs to (None: never frozen)."""
    if ".router." in name:
        return "router"
    if name.endswith((".ffn.w1", ".ffn.w2")) or ".ffn.shared." in name:
        return "experts"
    if ".attn." in name:
        return "attention"
    if name.startswith(("tok_emb.", "pos_emb.")):
        return "embeddings"
    return None


class Stages:
    """The run's stages; :meth:`enter` switches the freezing at stage boundaries."""

    def __init__(self, text: str):
        self.stages: list[Stage] = parse_stages(text)
        self.current: Stage | None = None

    def at(self, step: int) -> Stage | None:
        """The stage step ``step`` (0-based) belongs to; None after the last."""
        for s in self.stages:
            if s.start <= step < s.end:
                return s
        return None

    def frozen(self, part: str) -> bool:
        return self.current is not None and part in self.current.freeze

    def enter(self, step: int, models: list[nn.Module]) -> Stage | None:
        """Freeze what the stage of step ``step`` names in every model, unfreeze the
        rest. Returns the stage when this step starts one (or ends the last: an
        all-trained ``Stage`` from there), else None."""
        stage = self.at(step)
        if stage == self.current or not self.stages:
            return None
        self.current = stage
        frozen = stage.freeze if stage else ()
        for model in models:
            for name, p in model.named_parameters():
                p.requires_grad_(part_of(name) not in frozen)
        return stage or Stage(step, 0, ())
