"""Routing your own text, driven as a user does: type, click Route or press Enter; through
saved weights, through the live weights of a run that is training (no checkpoint
needed), and a plain word where a run has no weights at all. Routing happens in a
short-lived engine process: the window's process never needs torch."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pytestqt")

from PySide6.QtCore import Qt  # noqa: E402

from moe_studio.engine.probe import latest_checkpoint, list_checkpoints, route_text  # noqa: E402
from moe_studio.gui.views.routing import SOURCE_CUSTOM, RoutingDashboard  # noqa: E402
from moe_studio.gui.views.routing_custom import LIVE  # noqa: E402
from moe_studio.gui.run.worker import TrainingController  # noqa: E402
from moe_studio.paths import sample_runs_dir  # noqa: E402

from routing_helpers import train_tiny_run  # noqa: E402
from tiny import tiny_config  # noqa: E402

TEXT = "def f(x):\n    return x * 2"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return train_tiny_run(tmp_path_factory.mktemp("gui-route"))


def _type(qtbot, d, text: str) -> None:
    d.probe_edit.setFocus()
    d.probe_edit.clear()
    lines = text.split("\n")
    for i, line in enumerate(lines):
        qtbot.keyClicks(d.probe_edit, line)
        if i < len(lines) - 1:
            qtbot.keyClick(d.probe_edit, Qt.Key.Key_Return, Qt.KeyboardModifier.ShiftModifier)


def _assert_routed_as(arrays, run_dir, text, checkpoint):
    want = route_text(run_dir, text, checkpoint=checkpoint)
    for k in ("tokens", "topk_idx", "topk_weight", "probs"):
        np.testing.assert_array_equal(arrays[k], want[k], err_msg=k)


def test_route_button_click_routes_the_typed_text(make_dashboard, trained, qtbot):
    d = make_dashboard(RoutingDashboard, [trained.run_dir], size=(1280, 800))
    assert d.route_button.isEnabled()
    custom_item = d.source_combo.model().item(d.source_combo.findData(SOURCE_CUSTOM))
    assert not custom_item.isEnabled()                    # nothing routed yet
    _type(qtbot, d, TEXT)
    assert d.probe_edit.toPlainText() == TEXT             # Shift+Enter made a new line
    with qtbot.waitSignal(d.task.finished, timeout=60_000):
        qtbot.mouseClick(d.route_button, Qt.MouseButton.LeftButton)
    assert d.source() == SOURCE_CUSTOM and custom_item.isEnabled()
    a, meta, what = d.current()
    assert "custom text" in what and meta["step"] == trained.step_count
    assert "tokens through" in d.probe_note.text()
    _assert_routed_as(a, trained.run_dir, TEXT, latest_checkpoint(trained.run_dir))
    assert d.token_map.matrix().shape[1] == len(TEXT.encode())


def test_enter_routes_and_the_chosen_checkpoint_is_used(make_dashboard, trained, qtbot):
    d = make_dashboard(RoutingDashboard, [trained.run_dir], size=(1280, 800))
    labels = [d.weights_combo.itemText(i) for i in range(d.weights_combo.count())]
    d.weights_combo.setCurrentIndex(next(i for i, t in enumerate(labels) if "step 6" in t))
    _type(qtbot, d, "hello world")
    with qtbot.waitSignal(d.task.finished, timeout=60_000):
        qtbot.keyClick(d.probe_edit, Qt.Key.Key_Return)
    assert d.probe_edit.toPlainText() == "hello world"    # Enter routed, added no line
    a, meta, _ = d.current()
    assert meta["step"] == 6
    ck6 = next(c for c in list_checkpoints(trained.run_dir) if c.step == 6)
    _assert_routed_as(a, trained.run_dir, "hello world", ck6)


def test_empty_text_says_what_to_do(make_dashboard, trained, qtbot):
    d = make_dashboard(RoutingDashboard, [trained.run_dir], size=(1280, 800))
    qtbot.mouseClick(d.route_button, Qt.MouseButton.LeftButton)
    assert not d.task.busy and "Type or paste" in d.probe_note.text()


def test_a_sample_without_weights_says_so(make_dashboard, qtbot):
    run = sample_runs_dir() / "switch-top1"
    if not run.is_dir():
        pytest.skip("sample runs not present")
    assert not list_checkpoints(run)
    d = make_dashboard(RoutingDashboard, [run], size=(1280, 800))
    assert not d.route_button.isEnabled()
    assert "No weights" in d.probe_note.text()
    said = d.probe_edit.placeholderText()                # where the text would be typed
    assert "ships without weights" in said and "moe-top2" in said
    assert d.probe_edit.isReadOnly() and not d.probe_edit.toPlainText()


@pytest.mark.parametrize("mode", ["process", "thread"])
def test_route_through_the_live_weights_of_a_training_run(make_dashboard, tmp_path, qtbot,
                                                          mode):
    """checkpoint_every = 0: no checkpoint exists while it trains, yet text routes
    through the weights the engine holds; paused, those are exactly the weights the
    stop checkpoint saves afterwards."""
    cfg = tiny_config("live-route", train__steps=100_000, train__checkpoint_every=0,
                      train__eval_every=1000, train__snapshot_every=1000,
                      train__collect_stats=False)
    c = TrainingController(mode=mode)
    try:
        with qtbot.waitSignal(c.started, timeout=60_000):
            c.start(cfg, tmp_path / "runs")
        run_dir = Path(c.run_dir)
        qtbot.waitUntil(lambda: c.last_info is not None and c.last_info.step >= 3, timeout=60_000)
        with qtbot.waitSignal(c.stateChanged, timeout=30_000,
                              check_params_cb=lambda s: s == "paused"):
            c.pause()
        d = make_dashboard(RoutingDashboard, None, size=(1280, 800))
        d.set_training_controller(c)
        d.set_runs([run_dir])
        assert not list_checkpoints(run_dir)
        assert d.weights_combo.currentData() == LIVE
        assert d.route_button.isEnabled()
        _type(qtbot, d, TEXT)
        with qtbot.waitSignal(d.task.finished, timeout=60_000):
            qtbot.mouseClick(d.route_button, Qt.MouseButton.LeftButton)
        a, meta, _ = d.current()
        assert meta["source"].startswith("live weights"), d.probe_note.text()
        step = int(meta["step"])
        assert step >= 3
        assert not list(Path(c._weights_dir.name).glob("*.safetensors"))  # handed over once
        with qtbot.waitSignal(c.finished, timeout=60_000):
            c.stop()
    finally:
        c.shutdown(30_000)
    ck = latest_checkpoint(run_dir)
    assert ck is not None and ck.step == step             # paused: no step in between
    _assert_routed_as(a, run_dir, TEXT, ck)
    # the run has stopped: the live entry is gone, the saved weights remain
    assert d.weights_combo.findData(LIVE) == -1 and d.route_button.isEnabled()


def test_the_routing_view_does_not_import_torch():
    code = ("import sys; import moe_studio.gui.views.routing, moe_studio.gui.main_window; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={"QT_QPA_PLATFORM": "offscreen", "PATH": "/usr/bin:/bin"},
                         cwd=Path(__file__).resolve().parents[1], timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
