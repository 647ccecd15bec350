"""``moe-studio export --format tensorboard``, read back through TensorBoard's own reader."""
from __future__ import annotations

import numpy as np
import pytest

from moe_studio.store import RunWriter
from moe_studio.store.cli import add_parsers, cmd_export

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import (  # noqa: E402
    HISTOGRAMS, SCALARS, TENSORS, EventAccumulator)
from tensorboard.plugins.hparams import metadata  # noqa: E402

CONFIG = {"moe": {"router": "topk", "top_k": 2, "n_experts": 4, "aux_loss_coef": 0.01},
          "precision": {"mode": "bf16", "router_fp32": True}, "ensemble": {"members": 2},
          "train": {"steps": 6}, "model": {"moe_layers": "all"}}


def _run(tmp_path):
    w = RunWriter.create(tmp_path / "runs", name="tb", config=CONFIG, config_toml="")
    losses = {}
    for s in range(6):
        for m in (0, 1):
            losses[(m, s)] = 3.0 - 0.25 * s + 0.5 * m
            w.add_scalars(s, {"train/loss": losses[(m, s)]}, member=m, wall_time=1000.0 + s)
        w.add_scalars(s, {"lr": 1e-3 * (s + 1)}, member=-1, wall_time=1000.0 + s)
    w.add_scalars(4, {"val/loss": 2.5}, member=0)
    w.add_scalars(4, {"val/loss": 2.9}, member=1)
    w.add_histogram(3, "router_probs/L0", np.array([0.0, 0.25, 0.5, 1.0]), np.array([4, 0, 6]), member=1)
    w.close()
    return w, losses


def _read(folder):
    ea = EventAccumulator(str(folder), size_guidance={SCALARS: 0, HISTOGRAMS: 0, TENSORS: 0})
    ea.Reload()
    return ea


def test_tensorboard_export_reads_back(tmp_path, capsys):
    w, losses = _run(tmp_path)
    import argparse
    ap = argparse.ArgumentParser()
    add_parsers(ap.add_subparsers(dest="command"))
    out = tmp_path / "tb"
    assert cmd_export(ap.parse_args(["export", str(w.run_dir), "--format", "tensorboard",
                                     "--out", str(out)])) == 0
    std = capsys.readouterr()
    files = std.out.split()
    assert files and all("tfevents" in f for f in files)   # stdout: only the files written
    assert "scalars written" in std.err                     # progress on stderr

    for m in (0, 1):
        ea = _read(out / f"member-{m}")
        ev = ea.Scalars("train/loss")
        assert [e.step for e in ev] == list(range(6))
        np.testing.assert_allclose([e.value for e in ev], [losses[(m, s)] for s in range(6)], rtol=1e-6)
        assert [e.wall_time for e in ev] == [1000.0 + s for s in range(6)]
    h = _read(out / "member-1").Histograms("router_probs/L0")
    assert [x.step for x in h] == [3]
    hv = h[0].histogram_value
    assert list(hv.bucket) == [4, 0, 6] and list(hv.bucket_limit) == [0.25, 0.5, 1.0]
    assert hv.min == 0.0 and hv.max == 1.0 and hv.num == 10
    assert hv.sum == pytest.approx(4 * 0.125 + 6 * 0.75)

    root = _read(out)
    np.testing.assert_allclose([e.value for e in root.Scalars("lr")], [1e-3 * (s + 1) for s in range(6)],
                               rtol=1e-6)
    # final metrics: the mean over members of each member's last value
    final_train = np.mean([losses[(0, 5)], losses[(1, 5)]])
    assert root.Scalars("final/train_loss")[-1].value == pytest.approx(final_train, rel=1e-6)
    assert root.Scalars("final/val_loss")[-1].value == pytest.approx(2.7, rel=1e-6)
    content = root.PluginTagToContent("hparams")
    start = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
    hp = {k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind")) for k, v in start.hparams.items()}
    assert hp["moe.top_k"] == 2 and hp["moe.router"] == "topk" and hp["precision.mode"] == "bf16"
    assert hp["precision.router_fp32"] is True and hp["moe.aux_loss_coef"] == pytest.approx(0.01)
    exp = metadata.parse_experiment_plugin_data(content[metadata.EXPERIMENT_TAG])
    assert {m.name.tag for m in exp.metric_infos} == {"final/train_loss", "final/val_loss"}
    end = metadata.parse_session_end_info_plugin_data(content[metadata.SESSION_END_INFO_TAG])
    assert end.status == 1  # STATUS_SUCCESS: the run finished


def test_tensorboard_export_of_a_single_model_writes_one_run(tmp_path):
    w = RunWriter.create(tmp_path / "runs", name="one", config={"ensemble": {"members": 1}}, config_toml="")
    w.add_scalars(1, {"train/loss": 2.0}, member=0)
    w.add_scalars(1, {"train/loss": 7.0}, member=-1)   # same name run-wide: kept apart
    w.close()
    from moe_studio.store.export import export_run
    export_run(w.run_dir, "tensorboard", tmp_path / "tb")
    assert not list((tmp_path / "tb").glob("member-*"))
    ea = _read(tmp_path / "tb")
    assert [e.value for e in ea.Scalars("train/loss")] == [2.0]
    assert [e.value for e in ea.Scalars("train/loss/run-wide")] == [7.0]
