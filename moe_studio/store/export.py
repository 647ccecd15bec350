"""Export a run to CSV or Parquet files in long form (``moe-studio export``), or to
TensorBoard event files (see :mod:`.tensorboard_export`).

One file per record kind, in the folder ``out``:

- ``scalars``: step, member, name, value, wall_time
- ``tensors``: step, member, name, i0 .. i{d-1}, value (one row per element)
- ``histograms``: step, member, name, bin, left, right, count
- ``snapshots``: step, member, name, array, i0 .. i{d-1}, value (one row per element)
- ``snapshot_meta``: step, member, name, meta (JSON text)
- ``events``: step, member, kind, message, data (JSON text), wall_time
- ``run.json``: run id, name, status, times, error, config and meta

Index columns ``i0, i1, ...`` give an element's position in its array (C order). They
are int64, or nullable integers (empty in CSV) where arrays of fewer dimensions share
the file with larger ones. Values are float64 (complex arrays stay complex).
"""
from __future__ import annotations

import importlib.util
import itertools
import json
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from . import codec
from .reader import RunReader, open_run, reading

FORMATS = ("csv", "parquet", "tensorboard")


def export_run(path: str | Path, fmt: str, out: str | Path,
               progress: Callable[[str], None] = lambda _t: None) -> list[Path]:
    """Write every record of the run at ``path`` into folder ``out`` (created if needed)
    as ``fmt`` ('csv', 'parquet' or 'tensorboard' event files, see tensorboard_export)
    files; returns the files written. ``progress`` gets a line of text after each part
    (the CLI prints them on stderr). Raises RunFileError for an unreadable or damaged
    run, ValueError for a bad format, RuntimeError if parquet or tensorboard is asked for
    without its package installed."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r} (choose {', '.join(FORMATS)})")
    if fmt == "parquet" and importlib.util.find_spec("pyarrow") is None:
        raise RuntimeError("parquet export needs pyarrow (pip install pyarrow), or use --format csv")
    if fmt == "tensorboard":
        from .tensorboard_export import NEEDS, available
        if not available():
            raise RuntimeError(NEEDS)
    out = Path(out)
    with open_run(path) as r, reading(r.db_path):
        r.verify()  # a damaged run is refused, not exported with records missing
        progress(f"{r.path}: checked, exporting as {fmt}")  # after: a refusal stays one line
        if fmt == "tensorboard":
            from .runs import run_info
            from .tensorboard_export import export_tensorboard
            info = run_info(r.path, verify=False)
            out.mkdir(parents=True, exist_ok=True)
            written = export_tensorboard(r, out, {"final/train_loss": info.train_loss,
                                                  "final/val_loss": info.val_loss}, progress)
            progress(f"done: {len(written)} event file{'s' if len(written) != 1 else ''} in {out}")
            return written
        tables = {}
        for name, read in (("scalars", r.scalars),  # name stays categorical: dictionary-encoded in parquet
                           ("tensors", lambda: tensors_long(r)),
                           ("histograms", lambda: histograms_long(r)),
                           ("snapshots", lambda: snapshots_long(r)),
                           ("snapshot_meta", lambda: snapshot_meta(r)),
                           ("events", lambda: _events_table(r))):
            tables[name] = read()
            progress(f"read {name}: {len(tables[name]):,} rows")
        info = {"run_id": r.run_id, "name": r.name, "status": r.status, "started": r.started,
                "ended": r.ended, "error": r.error, "config": r.config, "meta": r.meta}
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, df in tables.items():
        p = out / f"{name}.{fmt}"
        if fmt == "csv":
            df.to_csv(p, index=False)
        else:
            df.to_parquet(p, index=False)
        written.append(p)
        progress(f"wrote {p}")
    p = out / "run.json"
    p.write_text(json.dumps(info, indent=2), encoding="utf-8")
    written.append(p)
    return written


# ---------------------------------------------------------------------- long forms
def tensors_long(r: RunReader) -> pd.DataFrame:
    """Every tensor element as a row: step, member, name, i0.., value."""
    rows = r._all("SELECT t.step, t.member, n.name, t.dtype, t.shape, t.data FROM tensors t "
                  "JOIN names n ON n.id = t.name_id ORDER BY n.name, t.member, t.step, t.id")
    parts = []
    # consecutive rows of one series with one dtype and shape are stacked and expanded together
    for (name, member, dtype, shape), grp in itertools.groupby(rows, key=lambda x: (x[2], x[1], x[3], x[4])):
        grp = list(grp)
        arrays = np.stack([codec.decode_array(dtype, shape, g[5]) for g in grp])
        steps = np.array([g[0] for g in grp], np.int64)
        parts.append(_elements(arrays, steps, {"member": member, "name": name}))
    return _concat(parts, ["step", "member", "name"])


def snapshots_long(r: RunReader) -> pd.DataFrame:
    """Every snapshot array element as a row: step, member, name, array, i0.., value."""
    rows = r._all("SELECT s.step, s.member, n.name, s.layout, s.data FROM snapshots s "
                  "JOIN names n ON n.id = s.name_id ORDER BY n.name, s.member, s.step, s.id")
    parts = []
    for step, member, name, layout, data in rows:
        for array_name, a in codec.decode_arrays(layout, data).items():
            parts.append(_elements(a[None], np.array([step], np.int64),
                                   {"member": member, "name": name, "array": array_name}))
    return _concat(parts, ["step", "member", "name", "array"])


def snapshot_meta(r: RunReader) -> pd.DataFrame:
    rows = r._all("SELECT s.step, s.member, n.name, s.meta FROM snapshots s "
                  "JOIN names n ON n.id = s.name_id ORDER BY n.name, s.member, s.step, s.id")
    return pd.DataFrame({"step": np.array([x[0] for x in rows], np.int64),
                         "member": np.array([x[1] for x in rows], np.int64),
                         "name": pd.array([x[2] for x in rows], dtype=str),
                         "meta": pd.array([x[3] for x in rows], dtype=str)})


def histograms_long(r: RunReader) -> pd.DataFrame:
    """Every histogram bin as a row: step, member, name, bin, left, right, count."""
    rows = r._all("SELECT h.step, h.member, n.name, h.edges, h.counts_dtype, h.counts "
                  "FROM histograms h JOIN names n ON n.id = h.name_id "
                  "ORDER BY n.name, h.member, h.step, h.id")
    parts = []
    for step, member, name, edges, cdt, counts in rows:
        e = np.frombuffer(codec.unpack(edges), "<f8")
        c = np.frombuffer(codec.unpack(counts), np.dtype(cdt))
        parts.append(pd.DataFrame({"step": np.full(c.size, step, np.int64),
                                   "member": np.full(c.size, member, np.int64),
                                   "name": name, "bin": np.arange(c.size, dtype=np.int64),
                                   "left": e[:-1], "right": e[1:],
                                   "count": c.astype(np.float64)}))
    if not parts:
        return pd.DataFrame({"step": np.empty(0, np.int64), "member": np.empty(0, np.int64),
                             "name": pd.array([], dtype=str), "bin": np.empty(0, np.int64),
                             "left": np.empty(0), "right": np.empty(0), "count": np.empty(0)})
    return pd.concat(parts, ignore_index=True)


def _events_table(r: RunReader) -> pd.DataFrame:
    ev = r.events()
    ev["data"] = pd.array([json.dumps(d) for d in ev["data"]], dtype=str)
    return ev


def _elements(arrays: np.ndarray, steps: np.ndarray, labels: dict) -> pd.DataFrame:
    """``arrays`` [S, *shape] recorded at ``steps`` [S] -> one row per element."""
    s, shape = arrays.shape[0], arrays.shape[1:]
    size = int(np.prod(shape, dtype=np.int64))
    values = arrays.reshape(s * size)
    if values.dtype.kind != "c":
        values = values.astype(np.float64)
    cols: dict = {"step": np.repeat(steps, size)}
    for k, v in labels.items():
        cols[k] = np.full(s * size, v, dtype=np.int64) if k == "member" else v
    idx = np.indices(shape).reshape(len(shape), size) if shape else np.empty((0, 1), np.int64)
    for d in range(len(shape)):
        cols[f"i{d}"] = np.tile(idx[d].astype(np.int64), s)
    cols["value"] = values
    return pd.DataFrame(cols)


def _concat(parts: list[pd.DataFrame], lead: list[str]) -> pd.DataFrame:
    if not parts:
        df = pd.DataFrame({c: pd.Series([], dtype=np.int64 if c in ("step", "member") else str)
                           for c in lead})
        df["value"] = pd.Series([], dtype=np.float64)
        return df
    df = pd.concat(parts, ignore_index=True)
    icols = sorted((c for c in df.columns if c[0] == "i" and c[1:].isdigit()), key=lambda c: int(c[1:]))
    for c in icols:
        # absent for arrays with fewer dimensions: NaN after concat -> nullable integers
        df[c] = df[c].astype(np.int64) if not df[c].isna().any() else df[c].astype("Int64")
    return df[lead + icols + ["value"]]
