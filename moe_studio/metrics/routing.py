"""Routing statistics over recorded arrays: what the Gates, Experts and Routing views show.

Inputs are the records of docs/CONTRACTS.md as numpy arrays:

* router-probability histograms ``router_probs/L{i}``: ``edges`` [B+1], ``counts`` [..., B];
* ``moe/tokens_per_expert`` / ``moe/dropped_per_expert``: [..., n_blocks, E] (a leading
  step axis when read as a series);
* ``routing/probe`` snapshots: ``tokens`` [N] bytes, ``domains`` [N], ``topk_idx``
  [n_blocks, N, k] (the chosen experts, most probable first), ``topk_weight``
  [n_blocks, N, k], ``probs`` [n_blocks, N, E].

"A token's choices" are its k (expert, weight) pairs; a top-1 variant counts only
the first. Shares are fractions in [0, 1]; the uniform baseline is ``1 / E``.
numpy only: no Qt, no torch.
"""
from __future__ import annotations

import numpy as np

from ..data.tokenizer import TOKEN_CLASSES, token_classes

# TensorBoard's distribution bands: min, the +-1.5, 1, 0.5 sigma points of a normal, median.
BAND_PERCENTILES = (0, 7, 16, 31, 50, 69, 84, 93, 100)


# --------------------------------------------------------------------------- histograms

def histogram_percentiles(edges, counts, percentiles=BAND_PERCENTILES) -> np.ndarray:
    """Percentiles of the values behind a histogram, by linear interpolation of its CDF
    (values assumed spread evenly inside each bin).

    ``edges``: [B+1] ascending bin edges, or [..., B+1] matching ``counts``.
    ``counts``: [..., B] non-negative bin counts. ``percentiles``: in 0..100.
    Returns float64 [..., P]; percentile 0 is the lower edge of the first non-empty
    bin, 100 the upper edge of the last; NaN for an empty histogram.
    """
    counts = np.asarray(counts, dtype=np.float64)
    edges = np.asarray(edges, dtype=np.float64)
    q = np.asarray(percentiles, dtype=np.float64).reshape(-1)
    if counts.ndim == 0:
        raise ValueError("counts must have a bin axis")
    n_bins = counts.shape[-1]
    if edges.shape[-1] != n_bins + 1:
        raise ValueError(f"{n_bins} bins need {n_bins + 1} edges, got {edges.shape[-1]}")
    if q.size and (q.min() < 0 or q.max() > 100):
        raise ValueError("percentiles must be in 0..100")
    if np.any(counts < 0):
        raise ValueError("histogram counts must be non-negative")
    lead = counts.shape[:-1]
    flat = counts.reshape(-1, n_bins)
    e = np.broadcast_to(edges, lead + (n_bins + 1,)).reshape(-1, n_bins + 1)
    cum = np.cumsum(flat, axis=1)                                  # [R, B]
    total = cum[:, -1] if n_bins else np.zeros(flat.shape[0])
    t = q[None, :] / 100.0 * total[:, None]                        # [R, P]
    # The bin where the CDF reaches t: the first with cum >= t (for t = 0 the first
    # non-empty bin, so empty bins below the data never count).
    below_t = np.where(t[..., None] > 0, cum[:, None, :] < t[..., None], cum[:, None, :] <= 0)
    j = np.minimum(below_t.sum(axis=-1), n_bins - 1)               # [R, P]
    c_j = np.take_along_axis(flat, j, axis=1)
    before = np.take_along_axis(cum, j, axis=1) - c_j
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.nan_to_num(np.clip((t - before) / c_j, 0.0, 1.0))
    lo = np.take_along_axis(e, j, axis=1)
    hi = np.take_along_axis(e, j + 1, axis=1)
    out = lo + frac * (hi - lo)
    out[~(total > 0)] = np.nan
    return out.reshape(lead + (q.size,))


# --------------------------------------------------------------------------- load

def choice_counts(topk_idx, n_experts: int, *, top1: bool = False, weights=None) -> np.ndarray:
    """Tokens routed to each expert, counting every one of a token's k choices (or only
    the first with ``top1``; or summing gate ``weights`` [..., N, k] instead of 1 each).

    ``topk_idx``: int [..., N, k]. Returns float64 [..., E].
    """
    idx = np.asarray(topk_idx)
    if idx.ndim < 2:
        raise ValueError("topk_idx must be [..., N, k]")
    w = None if weights is None else np.asarray(weights, dtype=np.float64)
    if top1:
        idx = idx[..., :1]
        w = None if w is None else w[..., :1]
    _check_experts(idx, n_experts)
    lead = idx.shape[:-2]
    flat = idx.reshape(-1, idx.shape[-2] * idx.shape[-1]).astype(np.int64)
    wf = None if w is None else w.reshape(flat.shape)
    out = np.stack([np.bincount(flat[r], weights=None if wf is None else wf[r],
                                minlength=n_experts).astype(np.float64)
                    for r in range(flat.shape[0])]) if flat.shape[0] else np.zeros((0, n_experts))
    return out.reshape(lead + (n_experts,))


def load_share(load) -> np.ndarray:
    """Each expert's fraction of the load along the last axis (0 where nothing was routed)."""
    t = np.asarray(load, dtype=np.float64)
    total = t.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, t / np.where(total > 0, total, 1.0), 0.0)


def load_over_uniform(load) -> np.ndarray:
    """Load divided by the mean load along the last axis: 1 = the uniform share,
    0 = unused, E = everything on one expert (0 where nothing was routed)."""
    t = np.asarray(load, dtype=np.float64)
    mean = t.mean(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(mean > 0, t / np.where(mean > 0, mean, 1.0), 0.0)


def uniform_share(n_experts: int) -> float:
    """The share each expert would get under perfectly uniform routing."""
    return 1.0 / int(n_experts)


def load_cv(load) -> np.ndarray:
    """Coefficient of variation of the load along the last axis (population std / mean);
    0 = balanced, sqrt(E - 1) = everything on one expert; 0 where nothing was routed."""
    t = np.asarray(load, dtype=np.float64)
    mean = t.mean(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(mean > 0, t.std(axis=-1) / np.where(mean > 0, mean, 1.0), 0.0)


def max_over_mean(load) -> np.ndarray:
    """The busiest expert's load over the mean load (1 = balanced, E = collapsed)."""
    t = np.asarray(load, dtype=np.float64)
    mean = t.mean(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(mean > 0, t.max(axis=-1) / np.where(mean > 0, mean, 1.0), 0.0)


def dropped_fraction(dropped, routed) -> np.ndarray:
    """Share of routed (token, expert) pairs dropped by capacity: sum over experts of
    ``dropped`` over the sum of ``routed`` (both [..., E]); 0 where nothing was routed."""
    d = np.asarray(dropped, dtype=np.float64).sum(axis=-1)
    r = np.asarray(routed, dtype=np.float64).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(r > 0, d / np.where(r > 0, r, 1.0), 0.0)


def dead_expert_mask(steps, load_series, window: int) -> np.ndarray:
    """Which experts were dead at each recorded step: no tokens in any record of the
    last ``window`` steps (records with ``step - window < s <= step``).

    ``steps``: int [S] ascending; ``load_series``: [S, ..., E]. Returns bool [S, ..., E].
    """
    steps = np.asarray(steps, dtype=np.int64)
    x = np.asarray(load_series)
    if x.shape[:1] != steps.shape:
        raise ValueError(f"{steps.size} steps but {x.shape[0] if x.ndim else 0} records")
    if window < 1:
        raise ValueError(f"window must be >= 1 step, got {window}")
    if steps.size == 0:
        return np.zeros(x.shape, dtype=bool)
    used = np.cumsum(x > 0, axis=0)                       # records with tokens, so far
    used = np.concatenate([np.zeros((1,) + x.shape[1:], used.dtype), used])
    first = np.searchsorted(steps, steps - window, side="right")   # first record in window
    in_window = used[np.arange(1, steps.size + 1)] - used[first]
    return in_window == 0


def dead_experts(steps, load_series, window: int) -> np.ndarray:
    """Experts dead at the last recorded step (see :func:`dead_expert_mask`), bool [..., E]."""
    mask = dead_expert_mask(steps, load_series, window)
    if mask.shape[0] == 0:
        return np.zeros(np.asarray(load_series).shape[1:], dtype=bool)
    return mask[-1]


def dead_expert_counts(steps, load_series, window: int) -> np.ndarray:
    """Number of dead experts at each recorded step, int [S, ...]."""
    return dead_expert_mask(steps, load_series, window).sum(axis=-1)


# --------------------------------------------------------------------------- gates

def gate_entropy(probs) -> np.ndarray:
    """Entropy of each token's router distribution in nats: ``probs`` [..., E] ->
    [...] (0 log 0 = 0)."""
    p = np.asarray(probs, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        terms = np.where(p > 0, -p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    return terms.sum(axis=-1)


def top1_prob(probs) -> np.ndarray:
    """The largest router probability of each token: [..., E] -> [...]."""
    return np.asarray(probs, dtype=np.float64).max(axis=-1)


def top1_expert(topk_idx) -> np.ndarray:
    """Each token's first choice: ``topk_idx`` [..., N, k] -> int64 [..., N]."""
    return np.asarray(topk_idx)[..., 0].astype(np.int64)


# --------------------------------------------------------------------------- specialisation

def share_matrix(groups, topk_idx, n_groups: int, n_experts: int, *, top1: bool = False,
                 weights=None) -> np.ndarray:
    """Share of each group's token-choices that go to each expert.

    ``groups``: int [N], the group (domain, token class, ...) of every token.
    ``topk_idx``: int [N, k] or [L, N, k]. ``top1``: count only first choices.
    ``weights``: optional gate weights shaped like ``topk_idx``: shares of gate mass
    instead of choice counts. Returns float64 [G, E] (or [L, G, E]); each row sums to 1,
    a group without tokens is a row of NaN.
    """
    g = np.asarray(groups).astype(np.int64).reshape(-1)
    idx = np.asarray(topk_idx)
    single = idx.ndim == 2
    if single:
        idx = idx[None]
        weights = None if weights is None else np.asarray(weights)[None]
    if idx.ndim != 3 or idx.shape[1] != g.size:
        raise ValueError(f"topk_idx must be [N, k] or [L, N, k] with N = {g.size} tokens, "
                         f"got shape {np.shape(topk_idx)}")
    if g.size and (g.min() < 0 or g.max() >= n_groups):
        raise ValueError(f"group labels must be in 0..{n_groups - 1}")
    w = None if weights is None else np.asarray(weights, dtype=np.float64)
    if top1:
        idx = idx[..., :1]
        w = None if w is None else w[..., :1]
    _check_experts(idx, n_experts)
    L, N, k = idx.shape
    cell = (g[None, :, None] * n_experts + idx.astype(np.int64)).reshape(L, N * k)
    wf = None if w is None else w.reshape(L, N * k)
    counts = np.stack([np.bincount(cell[layer], weights=None if wf is None else wf[layer],
                                   minlength=n_groups * n_experts)
                       for layer in range(L)]).reshape(L, n_groups, n_experts).astype(np.float64)
    total = counts.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(total > 0, counts / np.where(total > 0, total, 1.0), np.nan)
    return share[0] if single else share


def domain_expert_share(domains, topk_idx, n_domains: int, n_experts: int, *,
                        top1: bool = False) -> np.ndarray:
    """Domain x expert specialisation: :func:`share_matrix` with the token domains."""
    return share_matrix(domains, topk_idx, n_domains, n_experts, top1=top1)


def class_expert_share(tokens, topk_idx, n_experts: int, *, top1: bool = False) -> np.ndarray:
    """Token-class x expert: :func:`share_matrix` with the byte classes of
    ``data.tokenizer.TOKEN_CLASSES`` (letter, digit, whitespace, punctuation, code
    symbol, other) as groups. Returns [C, E] or [L, C, E]."""
    return share_matrix(token_classes(tokens), topk_idx, len(TOKEN_CLASSES), n_experts,
                        top1=top1)


def group_total_variation(share) -> np.ndarray:
    """How differently the groups are routed: the mean total-variation distance
    (half the L1 distance, 0 = same expert mix, 1 = disjoint experts) between every
    pair of groups' rows of a share matrix [G, E] (or [L, G, E] -> [L]). Rows of NaN
    (groups without tokens) are left out; NaN with fewer than two groups."""
    s = np.asarray(share, dtype=np.float64)
    single = s.ndim == 2
    if single:
        s = s[None]
    out = np.full(s.shape[0], np.nan)
    for layer in range(s.shape[0]):
        rows = [r for r in s[layer] if np.all(np.isfinite(r))]
        d = [0.5 * np.abs(a - b).sum() for i, a in enumerate(rows) for b in rows[i + 1:]]
        if d:
            out[layer] = float(np.mean(d))
    return out[0] if single else out


def tokens_in_cell(groups, topk_idx, group: int | None, expert: int, *,
                   top1: bool = False) -> np.ndarray:
    """Indices (ascending) of the tokens behind one cell of a share matrix: tokens of
    ``group`` (None: any group) with ``expert`` among their choices (the first choice
    with ``top1``). ``topk_idx``: [N, k] of one layer. Returns int64 [n]."""
    idx = np.asarray(topk_idx)
    if idx.ndim != 2:
        raise ValueError("topk_idx must be [N, k] (one layer)")
    if top1:
        idx = idx[:, :1]
    hit = np.any(idx == expert, axis=-1)
    if group is not None:
        hit &= np.asarray(groups).reshape(-1) == group
    return np.flatnonzero(hit).astype(np.int64)


def token_context(tokens, i: int, width: int = 16) -> tuple[str, str, str]:
    """The text around byte token ``i``: (up to ``width`` bytes before, the character
    token ``i`` belongs to, up to ``width`` bytes after), decoded as UTF-8 with whole
    characters at the edges; newlines and tabs shown as ``↵`` and ``⇥``."""
    b = np.asarray(tokens, dtype=np.uint8).reshape(-1)
    n = b.size
    if not 0 <= i < n:
        raise IndexError(f"token {i} out of range 0..{n - 1}")

    def is_cont(j: int) -> bool:      # a UTF-8 continuation byte (10xxxxxx)
        return 0 <= j < n and (int(b[j]) & 0xC0) == 0x80

    c0 = i
    while c0 > 0 and is_cont(c0) and i - c0 < 3:
        c0 -= 1
    c1 = i + 1
    while c1 < n and is_cont(c1) and c1 - c0 < 4:
        c1 += 1
    lo = max(0, c0 - width)
    while lo > 0 and is_cont(lo):
        lo -= 1
    hi = min(n, c1 + width)
    while hi < n and is_cont(hi):
        hi += 1

    def text(a: int, z: int) -> str:
        s = b[a:z].tobytes().decode("utf-8", errors="replace")
        return s.replace("\r\n", "↵").replace("\n", "↵").replace("\t", "⇥").replace("\r", "↵")

    return text(lo, c0), text(c0, c1), text(c1, hi)


def _check_experts(idx: np.ndarray, n_experts: int) -> None:
    if n_experts < 1:
        raise ValueError(f"n_experts must be >= 1, got {n_experts}")
    if idx.size and (idx.min() < 0 or idx.max() >= n_experts):
        raise ValueError(f"expert indices must be in 0..{n_experts - 1}, got "
                         f"{int(idx.min())}..{int(idx.max())}")
