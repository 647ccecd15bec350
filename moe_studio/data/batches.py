"""Training and evaluation windows over a token stream.

A *window* starting at ``s`` is the model input ``tokens[s : s + context]`` and its
next-token targets ``tokens[s + 1 : s + context + 1]``, so valid starts are
``0 .. n_tokens - context - 1``. Training draws windows uniformly at random from a set
of starts (all of them, or a bootstrap resample for bagging ensembles); evaluation
uses fixed, evenly spaced windows so every evaluation sees the same text.
"""
from __future__ import annotations

import numpy as np

# Salt for bootstrap_starts' random stream, so that bootstrap_starts(..., seed) and
# BatchSampler(..., seed) never draw from the same sequence.
_BOOTSTRAP_SALT = 0xB0075


def window_starts(n_tokens: int, context: int) -> np.ndarray:
    """Every valid window start for a stream of ``n_tokens``: int64 [max(0, n_tokens - context)].

    A start ``s`` is valid when ``s + context + 1 <= n_tokens`` (the window's last
    target token exists).
    """
    if context < 1:
        raise ValueError(f"context must be >= 1 token, got {context}")
    return np.arange(max(0, n_tokens - context), dtype=np.int64)


def _gather(tokens: np.ndarray, starts: np.ndarray, context: int) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) int64 [len(starts), context]: inputs and the targets one token later."""
    win = tokens[starts[:, None] + np.arange(context + 1, dtype=np.int64)]
    return (np.ascontiguousarray(win[:, :-1], dtype=np.int64),
            np.ascontiguousarray(win[:, 1:], dtype=np.int64))


class BatchSampler:
    """Random training batches, reproducible from ``seed`` and resumable.

    ``tokens``: uint8 (or any integer) array [n_tokens]. ``starts``: the window starts
    to draw from, uniformly with replacement (default: :func:`window_starts`). The
    sampler owns its ``np.random.Generator(PCG64(seed))``, so other random draws in
    the process do not change its stream.
    """

    def __init__(self, tokens: np.ndarray, context: int, batch_size: int, seed: int,
                 starts: np.ndarray | None = None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.tokens = np.asarray(tokens)
        self.context = int(context)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        if starts is None:
            starts = window_starts(len(self.tokens), self.context)
        self.starts = np.asarray(starts, dtype=np.int64)
        if len(self.starts) == 0:
            raise ValueError(f"no training windows: {len(self.tokens)} tokens is fewer than "
                             f"context + 1 = {self.context + 1}")
        if self.starts.min() < 0 or self.starts.max() + self.context + 1 > len(self.tokens):
            raise ValueError("starts must lie in 0 .. n_tokens - context - 1")
        self.rng = np.random.Generator(np.random.PCG64(self.seed))

    def next(self) -> tuple[np.ndarray, np.ndarray]:
        """The next batch: ``(x, y)`` int64 [batch_size, context], ``y`` = ``x`` shifted
        one token ahead."""
        idx = self.rng.integers(0, len(self.starts), size=self.batch_size)
        return _gather(self.tokens, self.starts[idx], self.context)

    __next__ = next

    def __iter__(self):
        return self

    def state_dict(self) -> dict:
        """JSON-serialisable state: the bit generator's position plus the settings it
        is only valid for. PCG64's 128-bit integers are stored as hex strings so any
        JSON reader (not only Python's) keeps them exact."""
        st = self.rng.bit_generator.state
        return {
            "seed": self.seed, "context": self.context, "batch_size": self.batch_size,
            "n_starts": int(len(self.starts)),
            "bit_generator": {
                "bit_generator": st["bit_generator"],
                "state": {k: hex(v) for k, v in st["state"].items()},
                "has_uint32": int(st["has_uint32"]), "uinteger": int(st["uinteger"]),
            },
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue the batch stream where :meth:`state_dict` left it."""
        for key in ("context", "batch_size", "n_starts"):
            mine = len(self.starts) if key == "n_starts" else getattr(self, key)
            if int(state[key]) != mine:
                raise ValueError(f"sampler state is for {key} = {state[key]}, this sampler has "
                                 f"{mine}: resume with the same data settings")
        bg = state["bit_generator"]
        self.rng.bit_generator.state = {
            "bit_generator": bg["bit_generator"],
            "state": {k: int(v, 16) for k, v in bg["state"].items()},
            "has_uint32": int(bg["has_uint32"]), "uinteger": int(bg["uinteger"]),
        }


def bootstrap_starts(n_tokens: int, context: int, seed: int) -> np.ndarray:
    """A bootstrap resample (with replacement, same size) of :func:`window_starts`,
    sorted: int64 [n_tokens - context]. Same seed, same resample; each bagging
    ensemble member passes its own seed and gives the result to BatchSampler."""
    base = window_starts(n_tokens, context)
    if len(base) == 0:
        return base
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), _BOOTSTRAP_SALT])))
    return np.sort(base[rng.integers(0, len(base), size=len(base))])


def eval_windows(tokens: np.ndarray, context: int, batch_size: int, n_batches: int,
                 domains: np.ndarray | None = None) -> list[tuple[np.ndarray, ...]]:
    """Fixed evaluation batches: ``batch_size * n_batches`` windows evenly spaced from
    the first to the last valid start, so they cover the whole validation text and
    are the same on every call.

    Returns ``n_batches`` tuples ``(x, y)`` of int64 [batch_size, context]; with
    ``domains`` (array [n_tokens] aligned with ``tokens``) each tuple is
    ``(x, y, d)`` where ``d`` int64 [batch_size, context] is the domain of each input
    token of ``x``. When the text has fewer windows than requested, windows repeat.
    """
    tokens = np.asarray(tokens)
    n_starts = len(tokens) - context
    if n_starts < 1:
        raise ValueError(f"no evaluation windows: {len(tokens)} tokens is fewer than "
                         f"context + 1 = {context + 1}")
    if domains is not None and len(domains) != len(tokens):
        raise ValueError(f"domains has {len(domains)} entries, tokens {len(tokens)}")
    n = batch_size * n_batches
    starts = np.round(np.linspace(0, n_starts - 1, n)).astype(np.int64)
    batches: list[tuple[np.ndarray, ...]] = []
    for b in range(n_batches):
        s = starts[b * batch_size:(b + 1) * batch_size]
        x, y = _gather(tokens, s, context)
        if domains is None:
            batches.append((x, y))
        else:
            d = np.asarray(domains)[s[:, None] + np.arange(context, dtype=np.int64)]
            batches.append((x, y, d.astype(np.int64)))
    return batches
