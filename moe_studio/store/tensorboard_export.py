"""Export a run as TensorBoard event files (``moe-studio export --format tensorboard``),
so ``tensorboard --logdir OUT`` shows it beside the user's other runs.

Written with the ``tensorboard`` package's own event writer and protocol buffers (the
optional ``tensorboard`` extra; TensorFlow is not needed). Layout of ``OUT``:

- ``OUT/``: run-wide records (member -1), and the model's records when the run has a
  single member; the hparams session (every config value as ``section.key``) with the
  final train / val loss as its metrics (``final/train_loss``, ``final/val_loss``);
- ``OUT/member-<m>/``: each member's records when an ensemble has several, so
  TensorBoard overlays the members as runs.

Scalars keep their step, wall time and value (NaN / inf as recorded). Histograms keep
their bins: TensorBoard's ``bucket_limit`` are the right edges, ``min`` / ``max`` the
outer edges, ``sum`` / ``sum_squares`` estimated from bin centres.
"""
from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .reader import RunReader

NEEDS = "tensorboard export needs the tensorboard package (pip install 'moe-studio[tensorboard]')"


def available() -> bool:
    return importlib.util.find_spec("tensorboard") is not None


def export_tensorboard(r: RunReader, out: Path, final: dict[str, float | None],
                       progress: Callable[[str], None] = lambda _t: None) -> list[Path]:
    """Write the run read by ``r`` into ``out`` as event files; returns them.
    ``final``: metric name -> final value (None: not recorded) for the hparams session."""
    if not available():
        raise RuntimeError(NEEDS)
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    scalars = r.scalars()
    members = sorted({int(m) for m in scalars["member"].unique()} |
                     {m for n in r.histogram_names() for m in _hist_members(r, n)})
    several = len([m for m in members if m >= 0]) > 1
    writers: dict[str, Any] = {}

    def writer(member: int):
        sub = f"member-{member}" if several and member >= 0 else ""
        if sub not in writers:
            (out / sub).mkdir(parents=True, exist_ok=True)
            writers[sub] = EventFileWriter(str(out / sub), filename_suffix=".moe-studio")
        return writers[sub]

    def emit(member: int, step: int, wall: float, value) -> None:
        writer(member).add_event(event_pb2.Event(wall_time=float(wall), step=int(step),
                                                 summary=summary_pb2.Summary(value=[value])))

    # A single model's series and a run-wide one of the same name share OUT/: the run-wide
    # one is told apart rather than interleaved with it into one zig-zag curve.
    shared = set() if several else \
        set(scalars.loc[scalars["member"] == -1, "name"]) & set(scalars.loc[scalars["member"] >= 0, "name"])
    try:
        for (name, member), grp in scalars.groupby(["name", "member"], observed=True, sort=True):
            tag = f"{name}/run-wide" if member == -1 and name in shared else str(name)
            for step, value, wall in zip(grp["step"].to_numpy(), grp["value"].to_numpy(),
                                         grp["wall_time"].to_numpy()):
                emit(int(member), step, wall, summary_pb2.Summary.Value(tag=tag,
                                                                        simple_value=float(value)))
        progress(f"{len(scalars):,} scalars written")
        n_hist = 0
        for name in r.histogram_names():
            for member in _hist_members(r, name):
                steps, edges, counts = r.histogram_series(name, member)
                walls = _step_walls(scalars, steps)
                for i, step in enumerate(steps):
                    e = edges if edges.ndim == 1 else edges[i]
                    emit(member, step, walls[i], summary_pb2.Summary.Value(
                        tag=name, histo=_histogram_proto(summary_pb2, e, counts[i])))
                    n_hist += 1
        progress(f"{n_hist:,} histograms written")
        last = int(scalars["step"].max()) if len(scalars) else 0
        wall = float(r.ended or (scalars["wall_time"].max() if len(scalars) else r.started))
        for metric, value in final.items():
            if value is not None:
                emit(-1, last, wall, summary_pb2.Summary.Value(tag=metric, simple_value=float(value)))
        for value in _hparams_values(summary_pb2, r, list(final)):
            emit(-1, 0, r.started, value)
    finally:
        for w in writers.values():
            w.close()
    return sorted(p for p in out.rglob("events.out.tfevents.*"))


def _hist_members(r: RunReader, name: str) -> list[int]:
    rows = r._all("SELECT DISTINCT h.member FROM histograms h JOIN names n ON n.id = h.name_id "
                  "WHERE n.name = ? ORDER BY h.member", (name,))
    return [int(x[0]) for x in rows]


def _step_walls(scalars, steps: np.ndarray) -> np.ndarray:
    """Wall time of each step, taken from the scalars recorded at or before it (a
    histogram record carries no time of its own)."""
    if not len(scalars):
        return np.zeros(len(steps))
    by_step = scalars.groupby("step")["wall_time"].max().sort_index()
    idx = np.searchsorted(by_step.index.to_numpy(), steps, side="right") - 1
    return by_step.to_numpy()[np.clip(idx, 0, None)]


def _histogram_proto(summary_pb2, edges: np.ndarray, counts: np.ndarray):
    counts = np.asarray(counts, np.float64)
    centres = (edges[:-1] + edges[1:]) / 2
    return summary_pb2.HistogramProto(
        min=float(edges[0]), max=float(edges[-1]), num=float(counts.sum()),
        sum=float((centres * counts).sum()), sum_squares=float((centres ** 2 * counts).sum()),
        bucket_limit=[float(x) for x in edges[1:]], bucket=[float(c) for c in counts])


def hparam_items(config: dict, prefix: str = "") -> dict[str, Any]:
    """Every config value as ``section.key`` -> a number, bool or string (what TensorBoard's
    hparams can hold; lists become their text)."""
    out: dict[str, Any] = {}
    for k, v in config.items():
        if isinstance(v, dict):
            out.update(hparam_items(v, f"{prefix}{k}."))
        elif isinstance(v, bool) or isinstance(v, str):
            out[prefix + k] = v
        elif isinstance(v, (int, float)) and math.isfinite(v):
            out[prefix + k] = float(v)
        elif v is not None:
            out[prefix + k] = str(v)
    return out


def _hparams_values(summary_pb2, r: RunReader, metrics: list[str]) -> list:
    from google.protobuf import struct_pb2
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

    hp = hparam_items(r.config)
    types = {bool: api_pb2.DATA_TYPE_BOOL, str: api_pb2.DATA_TYPE_STRING, float: api_pb2.DATA_TYPE_FLOAT64}
    experiment = api_pb2.Experiment(
        hparam_infos=[api_pb2.HParamInfo(name=k, type=types[type(v)]) for k, v in hp.items()],
        metric_infos=[api_pb2.MetricInfo(name=api_pb2.MetricName(tag=m)) for m in metrics])
    start = plugin_data_pb2.SessionStartInfo(group_name=r.run_id, start_time_secs=float(r.started))
    for k, v in hp.items():
        if isinstance(v, bool):
            start.hparams[k].CopyFrom(struct_pb2.Value(bool_value=v))
        elif isinstance(v, str):
            start.hparams[k].CopyFrom(struct_pb2.Value(string_value=v))
        else:
            start.hparams[k].CopyFrom(struct_pb2.Value(number_value=v))
    status = {"finished": api_pb2.STATUS_SUCCESS, "failed": api_pb2.STATUS_FAILURE,
              "running": api_pb2.STATUS_RUNNING}.get(r.status, api_pb2.STATUS_UNKNOWN)
    end = plugin_data_pb2.SessionEndInfo(status=status, end_time_secs=float(r.ended or 0.0))

    def value(tag: str, data) -> Any:
        return summary_pb2.Summary.Value(
            tag=tag, metadata=metadata.create_summary_metadata(data), tensor=metadata.NULL_TENSOR)

    return [value(metadata.EXPERIMENT_TAG, plugin_data_pb2.HParamsPluginData(experiment=experiment)),
            value(metadata.SESSION_START_INFO_TAG,
                  plugin_data_pb2.HParamsPluginData(session_start_info=start)),
            value(metadata.SESSION_END_INFO_TAG, plugin_data_pb2.HParamsPluginData(session_end_info=end))]
