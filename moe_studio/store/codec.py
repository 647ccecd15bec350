"""Bytes <-> numpy for the blobs in a run database.

Everything is little-endian on disk so a run copied between machines reads the same.

Tensor, histogram and snapshot payloads start with a one-byte tag: ``Z`` for zlib
(level 1) or ``R`` for raw bytes. Small arrays are stored raw because compressing a
few hundred bytes costs more time than it saves space (a [4, 8] float32 tensor even
grows); larger ones are compressed when that makes them smaller.

Scalar blocks are raw and grouped by series (see :class:`ScalarBlock`) so loading them
is a memcpy and a sort of a few segments, not of every value.
"""
from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

_LEVEL = 1
_MIN_COMPRESS = 512  # bytes; below this zlib costs more than it saves
# Array kinds the store accepts: bool, signed/unsigned integers, floats, complex.
_KINDS = "biufc"


def as_storable(array) -> np.ndarray:
    """``array`` as a C-contiguous little-endian numpy array; TypeError for object,
    string, structured or datetime data."""
    a = np.asarray(array)
    if a.dtype.kind not in _KINDS or a.dtype.fields is not None:
        raise TypeError(f"cannot store an array of dtype {a.dtype} (numeric or bool only)")
    if a.dtype.byteorder == ">":
        a = a.astype(a.dtype.newbyteorder("<"))
    # not np.ascontiguousarray: it turns a 0-d array into shape (1,)
    return a if a.flags.c_contiguous else a.copy(order="C")


def pack(raw: bytes) -> bytes:
    """Tagged payload: zlib-compressed if that is worth it, else raw."""
    if len(raw) >= _MIN_COMPRESS:
        z = zlib.compress(raw, _LEVEL)
        if len(z) < len(raw):
            return b"Z" + z
    return b"R" + raw


def unpack(blob: bytes) -> bytes:
    tag, body = blob[:1], blob[1:]
    if tag == b"Z":
        return zlib.decompress(body)
    if tag == b"R":
        return body
    raise ValueError(f"unknown payload tag {tag!r}")


def shape_text(shape: Sequence[int]) -> str:
    return ",".join(str(int(n)) for n in shape)


def parse_shape(text: str) -> tuple[int, ...]:
    return tuple(int(n) for n in text.split(",")) if text else ()


def encode_array(a: np.ndarray) -> tuple[str, str, bytes]:
    """A storable array (see :func:`as_storable`) -> ``(dtype.str, shape text, payload)``."""
    return a.dtype.str, shape_text(a.shape), pack(a.tobytes())


def decode_array(dtype: str, shape: str, blob: bytes) -> np.ndarray:
    """Inverse of :func:`encode_array`; returns a writable array the caller owns."""
    return np.frombuffer(unpack(blob), dtype=np.dtype(dtype)).reshape(parse_shape(shape)).copy()


def encode_arrays(arrays: dict[str, np.ndarray]) -> tuple[str, bytes]:
    """Several storable arrays -> ``(layout JSON, one payload)`` for a snapshot."""
    layout = [[name, a.dtype.str, list(a.shape), a.nbytes] for name, a in arrays.items()]
    return json.dumps(layout), pack(b"".join(a.tobytes() for a in arrays.values()))


def decode_arrays(layout: str, blob: bytes) -> dict[str, np.ndarray]:
    raw = unpack(blob)
    out, pos = {}, 0
    for name, dtype, shape, nbytes in json.loads(layout):
        count = int(np.prod(shape, dtype=np.int64))
        out[name] = np.frombuffer(raw, dtype=np.dtype(dtype), count=count,
                                  offset=pos).reshape(shape).copy()
        pos += nbytes
    return out


# ---------------------------------------------------------------------- scalars
@dataclass
class ScalarBlock:
    """One commit's scalars grouped by series.

    ``series`` int32 [K, 3] = (name id, member, count) sorted by (name id, member);
    ``steps`` int64 [n], ``values`` float64 [n], ``wall_times`` float64 [n] hold the
    series' values one series after another in that order, each ascending by step
    (equal steps keep their write order), n = ``series[:, 2].sum()``.
    """
    series: np.ndarray
    steps: np.ndarray
    values: np.ndarray
    wall_times: np.ndarray

    @classmethod
    def build(cls, steps: list[int], members: list[int], name_ids: list[int],
              values: list[float], wall_times: list[float]) -> "ScalarBlock":
        """Group parallel per-value lists (in write order) by series."""
        st = np.asarray(steps, np.int64)
        mem = np.asarray(members, np.int32)
        ids = np.asarray(name_ids, np.int32)
        order = np.lexsort((st, mem, ids))  # stable: write order breaks ties
        st, mem, ids = st[order], mem[order], ids[order]
        new = np.empty(len(ids), bool)
        new[:1] = True
        new[1:] = (ids[1:] != ids[:-1]) | (mem[1:] != mem[:-1])
        starts = np.flatnonzero(new)
        counts = np.diff(np.append(starts, len(ids)))
        series = np.stack([ids[starts], mem[starts], counts]).T.astype("<i4")
        return cls(series, st, np.asarray(values, np.float64)[order],
                   np.asarray(wall_times, np.float64)[order])

    def last_rows(self) -> list[tuple[int, int, int, float, float]]:
        """``(name id, member, step, value, wall time)`` of each series' last value."""
        ends = np.cumsum(self.series[:, 2].astype(np.int64)) - 1
        return list(zip(self.series[:, 0].tolist(), self.series[:, 1].tolist(),
                        self.steps[ends].tolist(), self.values[ends].tolist(),
                        self.wall_times[ends].tolist()))

    def blobs(self) -> tuple[bytes, bytes, bytes, bytes]:
        """(series, steps, values, wall_times) as raw little-endian bytes."""
        return (self.series.astype("<i4").tobytes(), self.steps.astype("<i8").tobytes(),
                self.values.astype("<f8").tobytes(), self.wall_times.astype("<f8").tobytes())


def decode_scalar_blocks(rows: Iterable[Sequence[bytes]]) -> ScalarBlock:
    """Rows of ``(series, steps, vals, wall_times)`` blobs, in id order -> one
    ScalarBlock whose ``series`` is the concatenation of the blocks' segment lists
    (so it is sorted within each block only)."""
    rows = list(rows)
    # One join and one frombuffer per column: a memcpy, no per-row numpy calls (a long
    # run has many thousands of blocks).
    cols = [b"".join(r[j] for r in rows) for j in range(4)]
    block = ScalarBlock(np.frombuffer(cols[0], "<i4").reshape(-1, 3),
                        np.frombuffer(cols[1], "<i8"), np.frombuffer(cols[2], "<f8"),
                        np.frombuffer(cols[3], "<f8"))
    # A damaged block must not be gathered out of bounds or silently misaligned
    counts = block.series[:, 2]
    n = len(block.steps)
    if (counts < 0).any() or int(counts.sum(dtype=np.int64)) != n or len(block.values) != n \
            or len(block.wall_times) != n or (block.series[:, 0] < 0).any():
        raise ValueError(f"scalar blocks disagree: the series list counts "
                         f"{int(counts.sum(dtype=np.int64))} values, the columns hold {n}, "
                         f"{len(block.values)}, {len(block.wall_times)}")
    return block
