"""How much the members of an ensemble agree: pure functions, torch or numpy in, numbers
or numpy arrays out.

Shapes and units used throughout:

- ``logp``: log-probabilities [M, N, V] (M members, N tokens, V classes), natural log.
  Log-probabilities below ``LOGP_FLOOR`` are treated as the floor in entropies and
  divergences (``exp`` of the floor is 0 in float32, so nothing changes but ``-inf``
  stops producing NaN); NLLs use the exact value.
- ``targets``: int [N], the class each token should predict.
- ``correct``: bool [M, N], member m's top-1 prediction equals the target (its
  "oracle output" in Kuncheva's terms); ``pred``: int [M, N] top-1 predictions.
- Entropies and divergences are in nats per token.

Oracle-output measures follow Kuncheva & Whitaker, "Measures of diversity in classifier
ensembles", Machine Learning 51 (2003). For a pair (i, k) of members, N^ab counts the
tokens where member i is correct (a = 1) or wrong (a = 0) and member k is correct
(b = 1) or wrong (b = 0):

- Q statistic      Q = (N11 N00 - N01 N10) / (N11 N00 + N01 N10)
- correlation      rho = (N11 N00 - N01 N10) / sqrt((N11+N10)(N01+N00)(N11+N01)(N10+N00))
- disagreement     D = (N01 + N10) / N
- double fault     DF = N00 / N
- pairwise kappa   kappa = 2 (N11 N00 - N01 N10) / ((N11+N10)(N10+N00) + (N11+N01)(N01+N00))
                   (Cohen's kappa (p_o - p_e) / (1 - p_e) of the 2x2 oracle table)
- interrater kappa (non-pairwise) kappa = 1 - (1/M) sum_j l_j (M - l_j) / (N (M-1) p (1-p)),
                   l_j = number of members correct on token j, p = mean member accuracy.

Ensemble-level pairwise values are averaged over the M(M-1)/2 pairs i < k. A pair whose
formula divides by zero (e.g. both members always right) is undefined (NaN in the
matrix) and left out of the average; the average of no defined pair is NaN. Matrix
diagonals are by definition: agreement 1, Q 1, correlation 1, kappa 1, disagreement 0,
double fault = the member's error rate, JS 0.

Everything that touches the V axis runs in one pass (``ensemble_metrics``): M exp and
1 + M(M-1)/2 log evaluations per (token, class) are the floor for exact entropies and
pairwise JS, and they dominate: 4 members x 64k tokens x V = 256 is 67M exp + 117M log.
On the CPU the pass is the fused native kernel (``_native``, C built by setup.py): per
token the members' probabilities stay in L1, exp and log are vectorised polynomials, and
the tokens are split over threads (``moe-studio bench ensemble`` times it against the
torch pass on the machine at hand). Elsewhere (CUDA, or no kernel built, or NaN in the input) it is a chunked
torch pass over L2-sized chunks with preallocated buffers; both give the same numbers to
~1e-6 (tested).
The [M, N] measures (oracle counts, agreement, kappas) never touch the V axis.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..metrics.diversity import entropy_measure, kohavi_wolpert_variance

LOGP_FLOOR = -1.0e4
_CHUNK_ELEMS = 1 << 18   # elements of one member's [chunk, V] slice per pass (1 MiB float32)
_PROB_FLOOR = 1e-30      # clamp before log in mixture entropies (0 * log(floor) = 0)


# ------------------------------------------------------------------ conversions
def as_tensor(a: Any, dtype: torch.dtype | None = None) -> Tensor:
    """A torch tensor view of ``a`` (numpy array, tensor or sequence), on the CPU when it
    came from numpy."""
    t = a if isinstance(a, Tensor) else torch.as_tensor(np.asarray(a))
    return t if dtype is None else t.to(dtype)


def _np(t: Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def _check(logp: Tensor, targets: Tensor | None = None) -> None:
    if logp.dim() != 3:
        raise ValueError(f"logp must be [M, N, V], got shape {tuple(logp.shape)}")
    if targets is not None and targets.shape != logp.shape[1:2]:
        raise ValueError(f"targets must be [N] = [{logp.shape[1]}], got {tuple(targets.shape)}")


# ------------------------------------------------------------------ per-member basics
def predictions(logp) -> np.ndarray:
    """Top-1 predictions: [M, N, V] -> int64 [M, N] (first maximum on ties)."""
    lp = as_tensor(logp)
    return _np(lp.argmax(-1))


def correctness(logp, targets) -> np.ndarray:
    """Oracle outputs: [M, N, V], [N] -> bool [M, N] (top-1 == target)."""
    lp, y = as_tensor(logp), as_tensor(targets).long()
    _check(lp, y)
    return _np(lp.argmax(-1) == y.to(lp.device)[None])


def member_nll(logp, targets) -> np.ndarray:
    """Mean negative log-likelihood of each member, nats/token: float64 [M]."""
    lp, y = as_tensor(logp), as_tensor(targets).long()
    _check(lp, y)
    picked = lp.gather(-1, y.to(lp.device).view(1, -1, 1).expand(lp.shape[0], -1, 1))[..., 0]
    return -_np(picked.double().mean(-1))


# ------------------------------------------------------------------ oracle-output measures
def oracle_counts(correct) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pairwise contingency counts of the oracle outputs, each float64 [M, M]:
    ``(N11, N10, N01, N00)`` where ``N10[i, k]`` counts tokens with member i right and
    member k wrong."""
    c = as_tensor(correct).to(torch.float64)
    if c.dim() != 2:
        raise ValueError(f"correct must be [M, N], got shape {tuple(c.shape)}")
    w = 1.0 - c
    return (_np(c @ c.T), _np(c @ w.T), _np(w @ c.T), _np(w @ w.T))


def _div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den != 0, num / np.where(den != 0, den, 1.0), np.nan)


def _set_diag(a: np.ndarray, value) -> np.ndarray:
    a = a.copy()
    np.fill_diagonal(a, value)
    return a


def _counts(correct) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``correct`` [M, N] -> its :func:`oracle_counts`; counts already made pass through
    (the pairwise measures below take either, so ``ensemble_metrics`` counts once)."""
    if isinstance(correct, tuple) and len(correct) == 4:
        return correct
    return oracle_counts(correct)


def pairwise_q(correct) -> np.ndarray:
    """Yule's Q statistic of every pair, [M, M] in [-1, 1] (NaN where undefined)."""
    n11, n10, n01, n00 = _counts(correct)
    return _set_diag(_div(n11 * n00 - n01 * n10, n11 * n00 + n01 * n10), 1.0)


def pairwise_correlation(correct) -> np.ndarray:
    """Correlation coefficient rho of the oracle outputs of every pair, [M, M]."""
    n11, n10, n01, n00 = _counts(correct)
    den = np.sqrt((n11 + n10) * (n01 + n00) * (n11 + n01) * (n10 + n00))
    return _set_diag(_div(n11 * n00 - n01 * n10, den), 1.0)


def pairwise_disagreement(correct) -> np.ndarray:
    """Share of tokens where exactly one of the two members is right, [M, M]."""
    n11, n10, n01, n00 = _counts(correct)
    n = n11 + n10 + n01 + n00
    return _div(n01 + n10, n)


def pairwise_double_fault(correct) -> np.ndarray:
    """Share of tokens where both members are wrong, [M, M] (diagonal: error rate)."""
    n11, n10, n01, n00 = _counts(correct)
    return _div(n00, n11 + n10 + n01 + n00)


def pairwise_kappa(correct) -> np.ndarray:
    """Cohen's kappa of the pair's 2x2 oracle table, [M, M]."""
    n11, n10, n01, n00 = _counts(correct)
    den = (n11 + n10) * (n10 + n00) + (n11 + n01) * (n01 + n00)
    return _set_diag(_div(2.0 * (n11 * n00 - n01 * n10), den), 1.0)


def interrater_kappa(correct) -> float:
    """Fleiss-style interrater agreement kappa of the oracle outputs (Kuncheva &
    Whitaker eq. 16): 1 - sum_j l_j (M - l_j) / M / (N (M-1) p (1-p)). NaN when M < 2 or
    the mean accuracy p is 0 or 1."""
    c = as_tensor(correct).to(torch.float64)
    m, n = c.shape
    if m < 2 or n == 0:
        return math.nan
    right = c.sum(0)                     # members right on each token
    p = float(right.sum()) / (n * m)
    den = n * (m - 1) * p * (1.0 - p)
    if den == 0:
        return math.nan
    return 1.0 - float((right * (m - right)).sum()) / m / den


def pair_mean(matrix: np.ndarray) -> float:
    """Mean over the pairs i < k of an [M, M] matrix, skipping NaN (undefined) pairs."""
    a = np.asarray(matrix, dtype=np.float64)
    iu = np.triu_indices(a.shape[0], k=1)
    v = a[iu]
    v = v[~np.isnan(v)]
    return float(v.mean()) if v.size else math.nan


# ------------------------------------------------------------------ prediction-level measures
def agreement_matrix(pred) -> np.ndarray:
    """Share of tokens on which two members make the same top-1 prediction: int [M, N]
    -> float64 [M, M] (diagonal 1)."""
    p = as_tensor(pred)
    if p.dim() != 2:
        raise ValueError(f"pred must be [M, N], got shape {tuple(p.shape)}")
    same = (p[:, None, :] == p[None, :, :]).sum(-1, dtype=torch.float64)
    return _np(same) / max(p.shape[1], 1)


def _chunk_len(n: int, v: int) -> int:
    return max(1, min(n, _CHUNK_ELEMS // max(v, 1)))


def js_divergence_matrix(logp) -> np.ndarray:
    """Jensen-Shannon divergence between every pair of members' predictive
    distributions, averaged over tokens, nats: [M, N, V] -> float64 [M, M], symmetric,
    zero diagonal, each entry in [0, log 2].

    JS(P, Q) = H((P + Q) / 2) - (H(P) + H(Q)) / 2, computed per token.
    """
    return ensemble_metrics(logp, targets=None)["pair_js"]


def entropy_decomposition(logp) -> dict[str, np.ndarray]:
    """Predictive-entropy decomposition of the mean-of-probabilities ensemble, per token,
    nats, each float64 [N]: ``total`` = H(mean_m p_m), ``expected`` = mean_m H(p_m),
    ``mutual_info`` = total - expected (the members' disagreement; >= 0 up to rounding).
    """
    r = ensemble_metrics(logp, targets=None, per_token=True)
    return {"total": r["token_entropy_total"], "expected": r["token_entropy_expected"],
            "mutual_info": r["token_mutual_info"]}


# ------------------------------------------------------------------ everything in one pass
def _argmax_last(x: Tensor) -> Tensor:
    """argmax along the last axis. On the CPU numpy's SIMD argmax beats torch's; both
    return the first maximum on ties."""
    if x.device.type == "cpu" and x.dtype == torch.float32:
        return torch.from_numpy(np.ascontiguousarray(x.numpy().argmax(-1)).astype(np.int64))
    return x.argmax(-1)


def _v_pass_torch(lp_all: Tensor, y: Tensor | None, per_token: bool) -> dict[str, Any]:
    """The V-axis pass of ``ensemble_metrics`` in torch, in L2-sized chunks with
    preallocated buffers (any device, any float dtype; NaN propagates). Same result dict
    as ``_native.agreement_pass``."""
    m, n, v = lp_all.shape
    dev = lp_all.device
    pairs = [(i, k) for i in range(m) for k in range(i + 1, m)]
    step = _chunk_len(n, v)
    p = torch.empty(m, step, v, dtype=torch.float32, device=dev)
    s = torch.empty(step, v, dtype=torch.float32, device=dev)
    lg = torch.empty(step, v, dtype=torch.float32, device=dev)
    h_member_sum = np.zeros(m)             # sum over tokens of H(p_m)
    h_total_sum = 0.0                      # sum over tokens of H(mean p)
    js_sum = np.zeros(len(pairs))
    pred = torch.empty(m, n, dtype=torch.long, device=dev)
    picked = torch.empty(m, n, dtype=torch.float64, device=dev) if y is not None else None
    ens_pred = torch.empty(n, dtype=torch.long, device=dev) if y is not None else None
    h_members_tok = torch.empty(m, n, dtype=torch.float64, device=dev) if per_token else None
    h_total_tok = torch.empty(n, dtype=torch.float64, device=dev) if per_token else None
    log_m, log2 = math.log(m), math.log(2.0)
    for a in range(0, n, step):
        b = min(n, a + step)
        c = b - a
        lp = lp_all[:, a:b]
        if lp.dtype != torch.float32 or not lp[0].is_contiguous():
            lp = lp.float().contiguous()
        pc, sc, lc = p[:, :c], s[:c], lg[:c]
        for i in range(m):
            pred[i, a:b] = _argmax_last(lp[i])
        if y is not None:
            picked[:, a:b] = lp.gather(-1, y[a:b].view(1, -1, 1).expand(m, -1, 1))[..., 0].double()
        torch.exp(lp, out=pc)
        mass = pc.sum(dim=(1, 2)).double()                  # [M], ~c each
        h_m = np.empty(m)
        for i in range(m):
            h_m[i] = -float(torch.dot(pc[i].reshape(-1), lp[i].reshape(-1)))
        if not np.isfinite(h_m).all():                       # -inf log-probs: 0 * -inf
            lpf = lp.clamp_min(LOGP_FLOOR)
            h_m = np.array([-float(torch.dot(pc[i].reshape(-1), lpf[i].reshape(-1))) for i in range(m)])
        else:
            lpf = lp
        h_member_sum += h_m
        torch.sum(pc, dim=0, out=sc)                        # M * mean probability
        if y is not None:
            ens_pred[a:b] = _argmax_last(sc)
        # A mixture is 0 only where its members' probabilities all are (-inf or an exp
        # underflow); without any zero in the chunk the clamps before the logs are skipped.
        zeros = bool(pc.amin() <= 0.0)
        if zeros:
            sc.clamp_min_(_PROB_FLOOR)
        torch.log(sc, out=lc)
        # H(s / M) summed over the chunk = (log M * sum s - sum s log s) / M
        h_total_sum += (log_m * float(mass.sum()) - float(torch.dot(sc.reshape(-1), lc.reshape(-1)))) / m
        if per_token:
            h_members_tok[:, a:b] = -(pc * lpf).sum(-1).double()
            h_total_tok[a:b] = ((log_m * sc.sum(-1) - (sc * lc).sum(-1)) / m).double()
        for j, (i, k) in enumerate(pairs):
            torch.add(pc[i], pc[k], out=sc)
            if zeros:
                sc.clamp_min_(_PROB_FLOOR)
            torch.log(sc, out=lc)
            # H((p_i + p_k) / 2) summed = (log 2 * sum s - sum s log s) / 2
            h_mix = (log2 * float(mass[i] + mass[k]) - float(torch.dot(sc.reshape(-1), lc.reshape(-1)))) / 2
            js_sum[j] += h_mix - 0.5 * (h_m[i] + h_m[k])
    return {"pred": pred, "picked": picked, "ens_pred": ens_pred,
            "h_member_sum": h_member_sum, "h_total_sum": h_total_sum, "js_sum": js_sum,
            "h_members_tok": h_members_tok, "h_total_tok": h_total_tok}


def _v_pass(lp_all: Tensor, y: Tensor | None, per_token: bool, backend: str,
            threads: int | None) -> tuple[dict[str, Any], str]:
    """The V-axis pass through the native kernel where it applies, else torch."""
    if backend not in ("auto", "native", "torch"):
        raise ValueError(f"backend must be 'auto', 'native' or 'torch', got {backend!r}")
    if backend == "native" and lp_all.device.type != "cpu":
        raise ValueError(f"the native agreement kernel runs on the CPU; logp is on {lp_all.device}")
    if backend != "torch" and lp_all.device.type == "cpu" and lp_all.shape[0] >= 1:
        from . import _native

        lp = lp_all.to(torch.float32).contiguous()     # no copy when it already is
        res = _native.agreement_pass(lp, y, per_token,
                                     threads=threads or torch.get_num_threads())
        if res is not None:
            return res, "native"
        if backend == "native" and not _native.available():
            raise RuntimeError("the native agreement kernel is not built on this machine")
        # not built, or NaN / +inf in the input: the torch path propagates them
    return _v_pass_torch(lp_all, y, per_token), "torch"


@torch.no_grad()
def ensemble_metrics(logp, targets=None, *, per_token: bool = False, backend: str = "auto",
                     threads: int | None = None) -> dict[str, Any]:
    """Every agreement metric of an ensemble in one pass over ``logp``.

    ``logp`` [M, N, V] (torch or numpy, any float dtype; computed in float32),
    ``targets`` int [N] or None (then only the target-free measures are returned).
    Returns a dict:

    - always: ``pred`` int64 [M, N]; ``agreement`` [M, M]; ``pair_js`` [M, M];
      ``js_divergence`` (pair mean); ``entropy_total``, ``entropy_expected``,
      ``mutual_info`` (token means of the decomposition); ``n_tokens``, ``n_members``;
      ``backend`` ("native" or "torch", which pass computed the V axis).
    - with ``per_token``: ``token_entropy_total``, ``token_entropy_expected``,
      ``token_mutual_info`` float64 [N].
    - with targets: ``member_nll``, ``member_acc`` [M]; ``ensemble_nll``, ``ensemble_acc``
      (mean-of-probabilities rule); ``gain`` = mean(member_nll) - ensemble_nll;
      ``correct`` bool [M, N]; the pairwise matrices ``pair_q``, ``pair_correlation``,
      ``pair_disagreement``, ``pair_double_fault``, ``pair_kappa`` [M, M] and their pair
      means ``q_statistic``, ``correlation``, ``disagreement``, ``double_fault``,
      ``kappa_pairwise``; ``kappa_interrater``; the non-pairwise ``kw_variance``
      (Kohavi-Wolpert) and ``entropy_e`` (``metrics.diversity``).

    ``backend``: "auto" takes the fused native kernel for CPU tensors when it is built
    (``_native``; NaN or +inf in ``logp`` send it to torch), "torch" the chunked torch
    pass, "native" insists on the kernel. ``threads``: how many threads the kernel splits
    the tokens over (default: torch's intra-op thread count).

    Cost: M exp and 1 + M(M-1)/2 log evaluations per (token, class) (the pairwise
    mixtures of the JS divergence dominate from M = 4 on).
    """
    lp_all = as_tensor(logp)
    _check(lp_all)
    m, n, v = lp_all.shape
    dev = lp_all.device
    y = None
    if targets is not None:
        y = as_tensor(targets).long().to(dev)
        _check(lp_all, y)
    pairs = [(i, k) for i in range(m) for k in range(i + 1, m)]
    r, used = _v_pass(lp_all, y, per_token, backend, threads)
    pred, picked, ens_pred = r["pred"], r["picked"], r["ens_pred"]
    h_member_sum, h_total_sum, js_sum = r["h_member_sum"], r["h_total_sum"], r["js_sum"]
    log_m = math.log(m)
    js = np.zeros((m, m))
    for j, (i, k) in enumerate(pairs):
        js[i, k] = js[k, i] = max(js_sum[j] / max(n, 1), 0.0)
    nn_ = max(n, 1)
    h_exp = float(h_member_sum.mean()) / nn_
    h_tot = h_total_sum / nn_
    out: dict[str, Any] = {
        "n_members": m, "n_tokens": n, "backend": used,
        "pred": _np(pred),
        "agreement": agreement_matrix(pred),
        "pair_js": js,
        "js_divergence": pair_mean(js) if m > 1 else math.nan,
        "entropy_total": h_tot if n else math.nan,
        "entropy_expected": h_exp if n else math.nan,
        "mutual_info": h_tot - h_exp if n else math.nan,
    }
    if per_token:
        h_total_tok = r["h_total_tok"]
        he = r["h_members_tok"].mean(0)
        out.update(token_entropy_total=_np(h_total_tok), token_entropy_expected=_np(he),
                   token_mutual_info=_np(h_total_tok - he))
    if y is not None:
        correct = pred == y[None]
        member_nll_ = -picked.mean(-1)
        ens_lp = torch.logsumexp(picked, dim=0) - log_m
        ens_nll = float(-ens_lp.mean()) if n else math.nan
        cnt = oracle_counts(correct)
        q, rho, dis = pairwise_q(cnt), pairwise_correlation(cnt), pairwise_disagreement(cnt)
        df, kap = pairwise_double_fault(cnt), pairwise_kappa(cnt)
        out.update(
            correct=_np(correct),
            member_nll=_np(member_nll_), member_acc=_np(correct.double().mean(-1)),
            ensemble_nll=ens_nll,
            ensemble_acc=float((ens_pred == y).double().mean()) if n else math.nan,
            gain=float(member_nll_.mean()) - ens_nll,
            pair_q=q, pair_correlation=rho, pair_disagreement=dis, pair_double_fault=df,
            pair_kappa=kap,
            q_statistic=pair_mean(q), correlation=pair_mean(rho), disagreement=pair_mean(dis),
            double_fault=pair_mean(df), kappa_pairwise=pair_mean(kap),
            kappa_interrater=interrater_kappa(correct),
            kw_variance=kohavi_wolpert_variance(_np(correct)),
            entropy_e=entropy_measure(_np(correct)),
        )
    return out
