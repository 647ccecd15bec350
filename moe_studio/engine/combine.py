"""Combination rules: how M members' predictions become one ensemble prediction.

Every rule has the same interface::

    rule = make_rule("stacking")
    rule.fit(logp_fit, targets_fit)      # [M, N_fit, V], [N_fit]; a no-op for fixed rules
    ens = rule.apply(logp)               # [M, N, V] -> [N, V] ensemble log-probabilities
    rule.params()                        # what was fitted, as plain lists (for records)

``logp`` are members' log-probabilities (natural log). The rules:

- ``mean_prob``: log of the mean of the members' probabilities (the classic ensemble,
  and the run's default rule: member -1 ``val/loss``).
- ``mean_logit``: softmax of the mean of the members' logits. Logits and log-probs differ
  by a per-member, per-token constant (the log-partition), which the softmax removes,
  so this is ``log_softmax(mean_m logp_m)``: the normalised geometric mean.
- ``vote``: majority vote of the members' top-1 predictions, as a distribution:
  ``(1 - eps) * votes / M + eps * mean_prob`` with ``eps = 0.01``. The mean-probability
  part keeps the NLL finite (a target nobody voted for is not impossible) and breaks
  ties (classes with equal votes are ordered by mean probability), while a class with
  more votes always wins: eps <= 0.01 < (1 - eps) / M for every M <= 16.
- ``loss_weighted``: weighted mean of probabilities, weights ``softmax(-NLL_m / tau)``
  from each member's NLL on the fit tokens, ``tau = 0.1`` nats/token (a member 0.1
  nats/token worse than another gets 1/e of its weight).
- ``stacking``: a small meta-learner fitted on the fit tokens: per-member inverse
  temperature ``exp(a_m)`` and weight ``softmax(b)_m``, ensemble
  ``sum_m w_m softmax(exp(a_m) * logp_m)``. Starts at the mean-of-probabilities rule
  (a = b = 0) and runs ``STACK_STEPS`` L-BFGS iterations (strong Wolfe line search) on
  the mean NLL, on at most ``STACK_MAX_TOKENS`` evenly spaced fit tokens.
  Deterministic: the same inputs give the same parameters.

The split (``split_fit_report``): the first ``n_fit`` tokens fit, the rest report, with
``n_fit = N // 2`` unless given. Tokens come in validation-text order (the trainer's
evaluation windows are evenly spaced and in order, and it passes ``n_fit`` at a window
boundary), so the fit half is the first half of the validation text and the report
half the second: nothing a rule reports on was used to fit it. Every rule, fitted or
not, is reported on the same report half so their numbers compare.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .agreement import as_tensor, member_nll

RULES = ("mean_prob", "mean_logit", "vote", "loss_weighted", "stacking")
DEFAULT_RULE = "mean_prob"
VOTE_EPS = 0.01
WEIGHT_TAU = 0.1
STACK_STEPS = 10
STACK_MAX_TOKENS = 2048


def split_fit_report(n: int, n_fit: int | None = None) -> tuple[slice, slice]:
    """(fit, report) slices of N tokens: ``[0, n_fit)`` and ``[n_fit, N)``; ``n_fit``
    defaults to N // 2 and must leave both parts non-empty (for N >= 2)."""
    if n_fit is None:
        n_fit = n // 2
    if n >= 2 and not 0 < n_fit < n:
        raise ValueError(f"n_fit ({n_fit}) must lie in 1 .. N - 1 = {n - 1}")
    return slice(0, n_fit), slice(n_fit, n)


def _lp(logp) -> Tensor:
    t = as_tensor(logp)
    if t.dim() != 3:
        raise ValueError(f"logp must be [M, N, V], got shape {tuple(t.shape)}")
    return t.float()


class Rule:
    """Base class: a fixed rule needs no fit."""

    name = "rule"
    fitted_on: int = 0   # tokens the last fit saw

    def fit(self, logp, targets) -> "Rule":
        return self

    def apply(self, logp) -> Tensor:
        raise NotImplementedError

    def params(self) -> dict[str, Any]:
        return {}


class MeanProb(Rule):
    name = "mean_prob"

    def apply(self, logp) -> Tensor:
        lp = _lp(logp)
        return torch.logsumexp(lp, dim=0) - math.log(lp.shape[0])


class MeanLogit(Rule):
    name = "mean_logit"

    def apply(self, logp) -> Tensor:
        return F.log_softmax(_lp(logp).mean(0), dim=-1)


class Vote(Rule):
    name = "vote"

    def __init__(self, eps: float = VOTE_EPS):
        self.eps = float(eps)

    def apply(self, logp) -> Tensor:
        lp = _lp(logp)
        m, n, v = lp.shape
        votes = torch.zeros(n, v, dtype=torch.float32, device=lp.device)
        votes.scatter_add_(1, lp.argmax(-1).T, torch.ones(n, m, device=lp.device))
        mean_p = torch.exp(torch.logsumexp(lp, dim=0) - math.log(m))
        return torch.log((1.0 - self.eps) * votes / m + self.eps * mean_p)

    def params(self) -> dict[str, Any]:
        return {"eps": self.eps}


class LossWeighted(Rule):
    name = "loss_weighted"

    def __init__(self, tau: float = WEIGHT_TAU):
        self.tau = float(tau)
        self.weights: Tensor | None = None
        self.member_nll: Tensor | None = None

    def fit(self, logp, targets) -> "LossWeighted":
        lp = _lp(logp)
        y = as_tensor(targets).long().to(lp.device)
        nll = torch.from_numpy(member_nll(lp, y)).to(lp.device)
        self.member_nll = nll
        self.weights = torch.softmax(-nll / self.tau, dim=0)
        self.fitted_on = int(y.numel())
        return self

    def apply(self, logp) -> Tensor:
        lp = _lp(logp)
        if self.weights is None:
            raise RuntimeError("loss_weighted: call fit() first")
        logw = self.weights.log().float().to(lp.device).view(-1, 1, 1)
        return torch.logsumexp(lp + logw, dim=0)

    def params(self) -> dict[str, Any]:
        return {"tau": self.tau, "weights": [] if self.weights is None else self.weights.tolist()}


class Stacking(Rule):
    name = "stacking"

    def __init__(self, steps: int = STACK_STEPS, max_tokens: int = STACK_MAX_TOKENS):
        self.steps = int(steps)
        self.max_tokens = int(max_tokens)
        self.a: Tensor | None = None   # [M] log inverse temperatures
        self.b: Tensor | None = None   # [M] weight logits

    @staticmethod
    def _combine(lp: Tensor, a: Tensor, b: Tensor) -> Tensor:
        scaled = F.log_softmax(lp * a.exp().view(-1, 1, 1), dim=-1)
        return torch.logsumexp(scaled + F.log_softmax(b, dim=0).view(-1, 1, 1), dim=0)

    def fit(self, logp, targets) -> "Stacking":
        lp, y = _lp(logp), as_tensor(targets).long()
        n = lp.shape[1]
        if n > self.max_tokens:
            idx = torch.from_numpy(np.round(np.linspace(0, n - 1, self.max_tokens)).astype(np.int64))
            lp, y = lp[:, idx.to(lp.device)], y[idx]
        y = y.to(lp.device)
        m = lp.shape[0]
        # Only the target's log-probability under the combination is needed:
        # log sum_m w_m softmax(s_m lp_m)[y] = logsumexp_m(log w_m + s_m lp_m[y] - lse_v(s_m lp_m))
        lp_y = lp.gather(-1, y.view(1, -1, 1).expand(m, -1, 1))[..., 0]      # [M, n]
        a = torch.zeros(m, dtype=torch.float32, device=lp.device, requires_grad=True)
        b = torch.zeros(m, dtype=torch.float32, device=lp.device, requires_grad=True)
        opt = torch.optim.LBFGS([a, b], lr=1.0, max_iter=self.steps, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            s = a.exp().view(-1, 1)
            z = torch.logsumexp(lp * s[..., None], dim=-1)                   # [M, n]
            score = s * lp_y - z + F.log_softmax(b, dim=0).view(-1, 1)
            loss = -torch.logsumexp(score.double(), dim=0).mean()
            loss.backward()
            return loss

        with torch.enable_grad():
            opt.step(closure)
        self.a, self.b = a.detach(), b.detach()
        self.fitted_on = int(y.numel())
        return self

    def apply(self, logp) -> Tensor:
        if self.a is None:
            raise RuntimeError("stacking: call fit() first")
        lp = _lp(logp)
        return self._combine(lp, self.a.to(lp.device), self.b.to(lp.device))

    def params(self) -> dict[str, Any]:
        if self.a is None:
            return {}
        return {"weights": torch.softmax(self.b, 0).tolist(),
                "temperature": (-self.a).exp().tolist()}


class SumLogit(Rule):
    """Gradient boosting's ensemble: softmax of the sum of the members' logits
    (``log_softmax(sum_m logp_m)``: the log-partitions cancel as in ``mean_logit``)."""
    name = "sum_logit"

    def apply(self, logp) -> Tensor:
        return F.log_softmax(_lp(logp).sum(0), dim=-1)


class WeightedVote(Rule):
    """AdaBoost-SAMME's ensemble: the vote of the members' top-1 predictions weighted
    by their alphas, as a distribution like ``vote``:
    ``(1 - eps) * votes / sum(alpha) + eps * mean_prob`` (all alphas 0: mean_prob)."""
    name = "samme"

    def __init__(self, weights: list[float] | None = None, eps: float = VOTE_EPS):
        self.weights = None if weights is None else [float(a) for a in weights]
        self.eps = float(eps)

    def apply(self, logp) -> Tensor:
        lp = _lp(logp)
        m, n, v = lp.shape
        a = torch.ones(m) if self.weights is None else torch.as_tensor(self.weights[:m])
        a = a.float().to(lp.device)
        mean_lp = torch.logsumexp(lp, dim=0) - math.log(m)
        if float(a.sum()) <= 0:
            return mean_lp
        votes = torch.zeros(n, v, dtype=torch.float32, device=lp.device)
        votes.scatter_add_(1, lp.argmax(-1).T, a.view(1, m).expand(n, m).contiguous())
        return torch.log((1.0 - self.eps) * votes / a.sum() + self.eps * mean_lp.exp())

    def params(self) -> dict[str, Any]:
        return {"weights": self.weights or [], "eps": self.eps}


_CLASSES = {c.name: c for c in (MeanProb, MeanLogit, Vote, LossWeighted, Stacking, SumLogit,
                                WeightedVote)}
# Rules without a fit, which the run's headline ensemble metrics may use
# (ensemble.combine; config.schema.COMBINE_RULES lists the same names).
HEADLINE_RULES = ("mean_prob", "mean_logit", "vote", "sum_logit", "samme")


def make_rule(name: str, **kw) -> Rule:
    """A fresh rule by name (one of ``RULES``)."""
    try:
        return _CLASSES[name](**kw)
    except KeyError:
        raise ValueError(f"unknown combination rule {name!r} (known: {', '.join(_CLASSES)})") from None


def nll_acc(ens_logp, targets) -> tuple[float, float]:
    """Mean NLL (nats/token) and top-1 accuracy of ensemble log-probs [N, V]."""
    lp, y = as_tensor(ens_logp), as_tensor(targets).long()
    y = y.to(lp.device)
    if y.numel() == 0:
        return math.nan, math.nan
    nll = -lp.gather(-1, y[:, None]).double().mean()
    acc = (lp.argmax(-1) == y).double().mean()
    return float(nll), float(acc)


@torch.no_grad()
def evaluate_rules(logp, targets, n_fit: int | None = None,
                   rules: tuple[str, ...] = RULES) -> dict[str, dict[str, Any]]:
    """Fit every rule on the fit tokens and report it on the report tokens
    (``split_fit_report``). Returns ``{rule: {"nll", "acc", "params", "rule"}}`` with
    NLL in nats/token and the fitted ``Rule`` object under ``"rule"``."""
    lp, y = _lp(logp), as_tensor(targets).long()
    fit, rep = split_fit_report(lp.shape[1], n_fit)
    out: dict[str, dict[str, Any]] = {}
    for name in rules:
        rule = make_rule(name).fit(lp[:, fit], y[fit])
        nll, acc = nll_acc(rule.apply(lp[:, rep]), y[rep])
        out[name] = {"nll": nll, "acc": acc, "params": rule.params(), "rule": rule}
    return out
