"""Boosting members' token weights (``ensemble.method = "boosting"``).

Member k >= 1 weights the tokens of its batch by the loss of the ensemble so far (mean
of the probabilities of members 0..k-1) on them: ``w_t = exp(beta * l_t) /
mean_batch(exp(beta * l_t))``, ``beta = BOOST_BETA = 0.5``. ``beta = 1`` would be the
exact functional gradient of adding a new member to a mixture (``w = 1 / p_ens(y)``),
whose weights are too heavy-tailed for small batches; 0.5 is a tempered version.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

BOOST_BETA = 0.5
BOOST_HIST_EDGES = np.linspace(0.0, 8.0, 51)   # weights above 8 x mean land in the last bin


@torch.no_grad()
def ensemble_token_loss(models: list[torch.nn.Module], x: Tensor, y: Tensor) -> Tensor:
    """Per-token loss (nats) [B, T] of the mean-probability ensemble of ``models`` (each
    run in eval mode, then restored) on inputs ``x`` [B, T] and targets ``y`` [B, T];
    ignored targets (-1) get the loss of token 0."""
    prev = []
    for mj in models:
        was = mj.training
        mj.eval()
        lg, _ = mj(x)
        mj.train(was)
        prev.append(F.log_softmax(lg.float(), dim=-1))
    ens = torch.logsumexp(torch.stack(prev), dim=0) - math.log(len(models))     # [B, T, V]
    return -ens.gather(-1, y.clamp_min(0)[..., None])[..., 0]


def weight_histogram(w: Tensor) -> np.ndarray:
    """Counts of boosting weights over :data:`BOOST_HIST_EDGES` (larger ones in the
    last bin)."""
    return np.histogram(np.clip(w.cpu().numpy(), 0, BOOST_HIST_EDGES[-1]),
                        bins=BOOST_HIST_EDGES)[0]


def boosting_weights(ens_loss: Tensor, beta: float = BOOST_BETA) -> Tensor:
    """Per-token weights from the ensemble-so-far's per-token loss (nats), any shape:
    ``exp(beta * l) / mean(exp(beta * l))`` (mean 1 over all given tokens; monotone in
    the loss; computed stably by subtracting the maximum first). Tokens with a negative
    loss marker (ignored targets) are not expected here."""
    loss = ens_loss.detach().float()
    w = torch.exp(beta * (loss - loss.max()))
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
