"""The corpus as a pretrained model sees it: its tokenizer's tokens, in windows and
batches, each token labelled with its domain; and the probe text's routing laid over
its bytes.

MoE Studio's views show routing per UTF-8 byte (its own models read bytes). A
pretrained model reads subword tokens, so a probe snapshot of an inspection gives every
byte the routing of the model token it belongs to, and says which byte opens a token
(``token_start``) and which model token it is (``model_token``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...data.corpus import fair_shares

# Text read per domain before tokenizing, per token of its share of the budget: enough
# for any tokenizer's bytes per token, so a large corpus file is never read whole.
BYTES_PER_TOKEN_READ = 12


@dataclass
class Batch:
    ids: np.ndarray       # int64 [B, S]
    domains: np.ndarray   # int64 [B * S], each token's domain


def encode(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def plan_batches(tokenizer, domains: list[tuple[str, bytes, str]], tokens: int, seq_len: int,
                 batch_size: int) -> tuple[list[Batch], list[int]]:
    """Cut ``tokens`` tokens of the corpus (shared fairly between the domains, each one's
    text from its start) into windows of ``seq_len`` tokens (a BOS first where the
    tokenizer has one), ``batch_size`` windows a batch, domain by domain. A domain's
    last, shorter window forms a batch of its own. Returns the batches and the tokens
    used per domain."""
    bos = getattr(tokenizer, "bos_token_id", None)
    body = seq_len - (1 if bos is not None else 0)
    if body < 1:
        raise ValueError(f"seq_len ({seq_len}) leaves no room for text after the BOS token")
    per_domain = []
    read = max(1, tokens) * BYTES_PER_TOKEN_READ
    for _, data, _ in domains:
        chunk = data[:read]
        while chunk and (chunk[-1] & 0xC0) == 0x80:   # never cut inside a character
            chunk = chunk[:-1]
        per_domain.append(encode(tokenizer, chunk.decode("utf-8", errors="replace")))
    # shares of the budget in model tokens, BOS tokens included
    shares = fair_shares([len(ids) for ids in per_domain], tokens)
    batches: list[Batch] = []
    used = []
    for d, (ids, share) in enumerate(zip(per_domain, shares)):
        windows = []
        pos, left = 0, share
        while left >= 2 and pos < len(ids):
            take = min(body, left - (1 if bos is not None else 0), len(ids) - pos)
            if take < 1:
                break
            w = ([bos] if bos is not None else []) + ids[pos:pos + take]
            windows.append(w)
            pos += take
            left -= len(w)
        used.append(sum(len(w) for w in windows))
        full = [w for w in windows if len(w) == seq_len]
        rest = [w for w in windows if len(w) != seq_len]
        for i in range(0, len(full), batch_size):
            group = full[i:i + batch_size]
            batches.append(Batch(np.asarray(group, dtype=np.int64),
                                 np.full(len(group) * seq_len, d, dtype=np.int64)))
        for w in rest:
            batches.append(Batch(np.asarray([w], dtype=np.int64), np.full(len(w), d, dtype=np.int64)))
    return batches, used


def byte_owners(tokenizer, text: str) -> tuple[list[int], np.ndarray, bool]:
    """``(ids, owner, exact)``: the model tokens of ``text`` (special tokens the
    tokenizer adds included), and for every UTF-8 byte of ``text`` the index into
    ``ids`` of the token it belongs to (int64 [n_bytes]). Bytes no token covers (a
    pre-tokenizer that drops spaces) take the token before them. ``exact`` is False for a
    tokenizer without offsets, whose tokens are then spread evenly over the bytes."""
    data = text.encode("utf-8")
    owner = np.full(len(data), -1, dtype=np.int64)
    try:
        enc = tokenizer(text, add_special_tokens=True, return_offsets_mapping=True)
        offsets = enc["offset_mapping"]
        exact = True
    except (NotImplementedError, ValueError, TypeError):
        enc = tokenizer(text, add_special_tokens=True)
        offsets = None
        exact = False
    ids = list(enc["input_ids"])
    if offsets is not None:
        char_start = np.zeros(len(text) + 1, dtype=np.int64)
        char_start[1:] = np.cumsum([len(c.encode("utf-8")) for c in text])
        for t, (a, b) in enumerate(offsets):
            if b > a:
                owner[char_start[a]:char_start[b]] = t
    elif ids:
        owner[:] = np.minimum(np.arange(len(data)) * len(ids) // max(1, len(data)), len(ids) - 1)
    # forward fill, then back fill the start
    have = owner >= 0
    if have.any():
        idx = np.where(have, np.arange(len(owner)), 0)
        np.maximum.accumulate(idx, out=idx)
        owner = np.where(have[idx], owner[idx], -1)
        first = int(np.argmax(owner >= 0))
        owner[:first] = owner[first]
    return ids, owner, exact


def token_starts(owner: np.ndarray) -> np.ndarray:
    """uint8 [n_bytes]: 1 where a byte opens a new model token."""
    out = np.ones(owner.size, dtype=np.uint8)
    out[1:] = (owner[1:] != owner[:-1]).astype(np.uint8)
    return out
