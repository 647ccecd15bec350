"""Feed-forward activations: ``gelu`` (two matrices) and ``swiglu`` (gated, three).

A gated MLP computes ``(silu(x @ W_gate) * (x @ W_up)) @ W_down``. Its gate and up
projections are stored side by side as one input matrix of width ``2 * hidden``
(gate first), so that an expert is still one input matrix and one output matrix:
stacked over experts, ``w1`` [E, d, 2h] and ``w2`` [E, h, d] go through the same
grouped matmul as the ungated ``w1`` [E, d, h]. The activation of a pair of matrices
is therefore implied by their shapes (:func:`activate_for`), which lets every kernel
(loop, grouped, expert-parallel) serve both without another argument.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from .params import ACTIVATIONS, in_width  # noqa: F401 - shapes, torch-free (the form counts them)


def activate(u: Tensor, act: str) -> Tensor:
    """The hidden units from the input projection ``u`` [..., in_width(h, act)] -> [..., h]."""
    if act == "swiglu":
        gate, up = u.chunk(2, dim=-1)
        return F.silu(gate) * up
    if act == "gelu":
        return F.gelu(u)
    raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {act!r}")


def act_for(u_width: int, hidden: int) -> str:
    """Which activation an input projection of ``u_width`` columns feeding ``hidden``
    rows of the output matrix means."""
    if u_width == hidden:
        return "gelu"
    if u_width == 2 * hidden:
        return "swiglu"
    raise ValueError(f"expert weights do not fit together: w1 has {u_width} columns, "
                     f"w2 has {hidden} rows (expected equal, or twice for swiglu)")


def activate_for(u: Tensor, hidden: int) -> Tensor:
    """``activate`` with the activation implied by the widths (see the module docstring)."""
    return activate(u, act_for(u.shape[-1], hidden))
