"""Boosting (``ensemble.method = "boosting"``), three ways (``ensemble.boost_mode``):

- ``token_weights``: member k >= 1 weights the tokens of its batch by the loss of the
  ensemble so far (mean of the probabilities of members 0..k-1) on them: ``w_t =
  exp(beta * l_t) / mean_batch(exp(beta * l_t))``, ``beta = ensemble.boost_beta``
  (default ``BOOST_BETA = 0.5``). ``beta = 1`` would be the exact functional gradient
  of adding a new member to a mixture (``w = 1 / p_ens(y)``), whose weights are too
  heavy-tailed for small batches; 0.5 is a tempered version.
- ``samme`` (AdaBoost for K classes, Zhu et al. 2009): member j has a weight
  ``alpha_j = log((1 - err_j) / err_j) + log(K - 1)`` from its weighted top-1 error
  ``err_j``, K = the vocabulary; a token's weight for member k is ``exp(sum_{j<k}
  alpha_j [member j is wrong on it])`` (mean 1 over the batch), which is AdaBoost's
  sequential re-weighting written in closed form, so it needs no per-token state over
  the corpus. A member no better than chance (``err >= (K-1)/K``) gets alpha 0. The
  ensemble is the alpha-weighted vote (``combine`` rule ``samme``).
- ``gradient`` (gradient boosting on logits, Friedman 2001): member k is trained on the
  loss of ``F_{k-1}(x) + f_k(x)``, the frozen sum of the earlier members' logits plus its
  own, so it fits what the ensemble so far gets wrong (the negative gradient of the
  cross-entropy with respect to the logits, ``onehot(y) - softmax(F)``); the ensemble
  is the sum of the logits (``combine`` rule ``sum_logit``).
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
    return mean_prob_token_loss(member_outputs(models, x), y)


def mean_prob_token_loss(logits: list[Tensor], y: Tensor) -> Tensor:
    """:func:`ensemble_token_loss` from the members' logits [B, T, V] already computed."""
    prev = [F.log_softmax(lg.float(), dim=-1) for lg in logits]
    ens = torch.logsumexp(torch.stack(prev), dim=0) - math.log(len(prev))     # [B, T, V]
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


def samme_alpha(err: float, n_classes: int) -> float:
    """SAMME member weight ``log((1 - err) / err) + log(K - 1)``; 0 for a member no
    better than chance (``err >= (K - 1) / K``); ``err`` is clamped away from 0."""
    err = min(max(float(err), 1e-10), 1.0)
    if err >= (n_classes - 1) / n_classes:
        return 0.0
    return math.log((1.0 - err) / err) + math.log(n_classes - 1)


def samme_weights(wrong: Tensor, alphas: list[float]) -> Tensor:
    """Token weights ``exp(sum_j alpha_j wrong[j])`` with mean 1 over all tokens;
    ``wrong`` bool [J, ...] (member j's top-1 missed the token), ``alphas`` [J]."""
    a = torch.as_tensor(alphas, dtype=torch.float32, device=wrong.device)
    score = (wrong.float() * a.view(-1, *([1] * (wrong.dim() - 1)))).sum(0)
    w = torch.exp(score - score.max())
    return w / w.mean()


@torch.no_grad()
def member_outputs(models: list[torch.nn.Module], x: Tensor) -> list[Tensor]:
    """Each model's float32 logits [B, T, V] on ``x`` in eval mode (then restored)."""
    out = []
    for mj in models:
        was = mj.training
        mj.eval()
        lg, _ = mj(x)
        mj.train(was)
        out.append(lg.float())
    return out


def weighted_error(logits: Tensor, y: Tensor, w: Tensor) -> float:
    """Weighted top-1 error ``sum w [argmax != y] / sum w`` over tokens with y != -1."""
    valid = y != -1
    wrong = (logits.argmax(-1) != y) & valid
    return float((w * wrong).sum() / (w * valid).sum().clamp_min(1e-30))
