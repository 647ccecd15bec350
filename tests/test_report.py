"""``moe-studio report``: real tiny runs rendered offscreen into one PNG; overlays; the
one-line errors."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pytestqt")

from moe_studio.cli import main as cli_main  # noqa: E402
from moe_studio.config import ExperimentConfig  # noqa: E402
from tiny import tiny_config  # noqa: E402


def _tiny(name: str, seed: int = 0) -> ExperimentConfig:
    return tiny_config(name, data__batch_size=2, model__d_model=16, model__d_ff=32,
                       train__steps=8, train__warmup_steps=1, train__eval_every=4,
                       train__eval_batches=1, train__snapshot_every=4, train__seed=seed)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> list[Path]:
    pytest.importorskip("torch")
    from moe_studio.engine.trainer import Trainer
    d = tmp_path_factory.mktemp("report-runs")
    out = []
    for name, seed in (("tiny-a", 0), ("tiny-b", 1)):
        t = Trainer(_tiny(name, seed), d)
        while not t.done:
            t.step()
        t.close("finished")
        out.append(Path(t.run_dir))
    return out


def _pixels(path: Path) -> np.ndarray:
    from PySide6.QtGui import QImage
    img = QImage(str(path)).convertToFormat(QImage.Format.Format_RGB32)
    assert not img.isNull()
    arr = np.frombuffer(img.constBits(), dtype=np.uint8, count=img.sizeInBytes())
    # copy: the array must not outlive the QImage that owns the memory
    return arr.reshape(img.height(), img.bytesPerLine() // 4, 4)[:, :img.width(), :3].copy()


def _region_std(px: np.ndarray, y0: float, y1: float) -> float:
    h = px.shape[0]
    return float(px[int(h * y0):int(h * y1)].astype(np.float32).std())


def test_report_of_one_run(qapp, runs, tmp_path, capsys):
    out = tmp_path / "sub" / "one.png"
    rc = cli_main(["report", str(runs[0]), "--out", str(out), "--width", "900",
                   "--tabs", "Training"])
    assert rc == 0
    assert f"wrote {out}" in capsys.readouterr().out
    px = _pixels(out)
    h, w, _ = px.shape
    assert w == 900 and 400 < h < 2000, (w, h)
    # Not blank: the header text and the curves vary the pixels everywhere.
    assert _region_std(px, 0.0, 0.1) > 5
    assert _region_std(px, 0.1, 1.0) > 5
    # A light report: mostly light pixels.
    assert px.mean() > 128


def test_report_overlay_dark_all_dashboards(qapp, runs, tmp_path, capsys):
    from moe_studio.gui import theme
    from moe_studio.gui.main_window import DASHBOARDS
    was_dark = theme.is_dark()
    out = tmp_path / "overlay.png"
    rc = cli_main(["report", str(runs[0]), str(runs[1]), "--out", str(out), "--width", "1000",
                   "--dark"])
    assert rc == 0, capsys.readouterr().err
    px = _pixels(out)
    h, w, _ = px.shape
    assert w == 1000
    # Every dashboard with something to show has its section (at least ~300 px each):
    # all but Ensemble (no ensemble here).
    assert h > 300 * (len(DASHBOARDS) - 1)
    assert px.mean() < 128   # dark
    assert _region_std(px, 0.0, 1.0) > 5
    assert theme.is_dark() == was_dark  # the test app's palette is put back


def test_report_leaves_out_views_with_nothing_to_show(qapp, runs):
    """A view with nothing to show for these runs is one line saying why, not a picture
    of its empty state; asked for by name it is drawn anyway."""
    from moe_studio.gui.commands.report import render_dashboards
    from moe_studio.store import open_run

    secs = {t: (pm, msg) for t, pm, msg in render_dashboards([runs[0]], 700)}
    for title in ("Training", "Gates", "Experts", "Routing"):
        assert secs[title][0] is not None and secs[title][1] is None, title
    assert secs["Ensemble"][0] is None
    assert secs["Ensemble"][1] == "nothing to show: none of these runs is an ensemble"
    # headroom is on by default: its records are there to show
    assert open_run(runs[0]).config["precision"]["headroom"] is True
    assert secs["Precision"][0] is not None
    [(title, pm, msg)] = render_dashboards([runs[0]], 700, tabs=["Ensemble"])
    assert pm is not None and msg is None


def test_report_header_lines(runs):
    from moe_studio.gui.commands.report import run_lines
    from moe_studio.store import run_info
    a, b = run_lines([run_info(p) for p in runs])
    assert a.startswith("tiny-a  ·  finished  ·  step 8 / 8") and "val loss" in a
    assert b.startswith("tiny-b")


def test_bad_run_path_is_one_line(tmp_path, capsys):
    out = tmp_path / "x.png"
    rc = cli_main(["report", str(tmp_path / "no-such-run"), "--out", str(out)])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert err.startswith("moe-studio report: ") and "no-such-run" in err
    assert not out.exists()


def test_bad_options(runs, tmp_path, capsys):
    assert cli_main(["report", str(runs[0]), "--out", str(tmp_path / "x.jpg")]) == 2
    assert "--out must name a .png" in capsys.readouterr().err
    assert cli_main(["report", str(runs[0]), "--out", str(tmp_path / "x.png"),
                     "--width", "10"]) == 2
    assert "--width" in capsys.readouterr().err
    assert cli_main(["report", str(runs[0]), "--out", str(tmp_path / "x.png"),
                     "--tabs", "Nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown dashboard 'Nope'" in err and "Training" in err


@pytest.mark.slow
def test_report_without_a_display(runs, tmp_path):
    """The command a headless server runs: no $DISPLAY, no QT_QPA_PLATFORM."""
    import os
    env = {k: v for k, v in os.environ.items()
           if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    out = tmp_path / "headless.png"
    r = subprocess.run([sys.executable, "-m", "moe_studio", "report", str(runs[0]), "--out",
                        str(out), "--width", "800", "--tabs", "Training"],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert out.exists() and out.stat().st_size > 10_000


def test_empty_reasons_of_the_sample_runs(make_dashboard):
    """The reasons the report gives, on the recorded runs that ship with the app."""
    from moe_studio.gui.views.ensemble import EnsembleDashboard
    from moe_studio.gui.views.experts import ExpertsDashboard
    from moe_studio.gui.views.gates import GateDashboard
    from moe_studio.gui.views.precision import PrecisionDashboard
    from moe_studio.gui.views.routing import RoutingDashboard
    from moe_studio.paths import sample_runs_dir

    s = sample_runs_dir()
    dense, moe, fp16, bag = (s / n for n in ("dense-baseline", "moe-top2", "fp16-overflow",
                                             "bagging-4"))
    for cls in (GateDashboard, ExpertsDashboard, RoutingDashboard):
        d = make_dashboard(cls, [dense])
        assert d.report_empty_reason() == "dense model: no MoE layers"
        assert "Dense model" in d.dense_notice()          # over the empty plots in the app
        d = make_dashboard(cls, [moe])
        assert d.report_empty_reason() == "" and d.dense_notice() == ""
    assert make_dashboard(PrecisionDashboard, [fp16]).report_empty_reason() == ""
    # fp32 without precision.headroom: nothing to show; moe-top2 measures headroom
    plain = s / "moe-vs-ensemble-moe"
    assert make_dashboard(PrecisionDashboard, [plain]).report_empty_reason().startswith(
        "no precision records")
    assert make_dashboard(PrecisionDashboard, [moe]).report_empty_reason() == ""
    assert make_dashboard(EnsembleDashboard, [moe, dense]).report_empty_reason() != ""
    assert make_dashboard(EnsembleDashboard, [moe, bag]).report_empty_reason() == ""


@pytest.mark.parametrize("view,run", [("Training", "moe-top2"), ("Gates", "moe-top2"),
                                      ("Experts", "moe-top2"), ("Routing", "moe-top2"),
                                      ("Precision", "fp16-overflow"), ("Ensemble", "bagging-4")])
def test_reports_leave_out_the_controls(make_dashboard, view, run):
    """A report is a picture: no step slider, combo, Route box, spin box or "click a
    cell" panel in it; every figure still there."""
    from PySide6.QtWidgets import (QAbstractSpinBox, QComboBox, QLineEdit, QPlainTextEdit,
                                   QPushButton, QSlider, QWidget)

    from moe_studio.gui.widgets.heatmap import FigureWidget
    from moe_studio.gui.main_window import DASHBOARDS, _load_class
    from moe_studio.gui.widgets.plots import CurvePlot
    from moe_studio.gui.commands.report import hide_controls
    from moe_studio.gui.widgets.routed_text import TokenListPanel
    from moe_studio.paths import sample_runs_dir

    d = make_dashboard(_load_class(dict(DASHBOARDS)[view]), [sample_runs_dir() / run])
    figures = [f for f in d.findChildren(QWidget) if isinstance(f, (CurvePlot, FigureWidget))
               and f.isVisibleTo(d)]
    inputs = (QSlider, QAbstractSpinBox, QComboBox, QLineEdit, QPushButton, TokenListPanel)
    assert any(isinstance(w, inputs) and w.isVisibleTo(d) for w in d.findChildren(QWidget))
    hide_controls(d)
    left = [w for w in d.findChildren(QWidget) if w.isVisibleTo(d) and (
        isinstance(w, inputs) or isinstance(w, QPlainTextEdit) and not w.isReadOnly())]
    assert not left, left
    assert all(f.isVisibleTo(d) for f in figures) and figures


def test_report_keeps_qt_noise_off_stderr(runs, tmp_path):
    out = tmp_path / "quiet.png"
    r = subprocess.run([sys.executable, "-m", "moe_studio", "report", str(runs[0]), "--out",
                        str(out), "--width", "800", "--tabs", "Training,Experts"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and out.exists()
    assert r.stderr == "", r.stderr


def test_real_qt_warnings_still_reach_the_user(qapp, capfd):
    from PySide6.QtCore import qWarning

    from moe_studio.gui.commands.report import QT_NOISE, quiet_qt
    restore = quiet_qt("moe-studio report")
    try:
        qWarning(f"This plugin {QT_NOISE[0]}()")
        qWarning("QPainter::begin: Paint device returned engine == 0")
    finally:
        restore()
    err = capfd.readouterr().err
    assert "propagateSizeHints" not in err
    assert "moe-studio report: Qt: QPainter::begin: Paint device returned engine == 0" in err


@pytest.mark.parametrize("view,run", [("Training", "moe-top2"), ("Experts", "moe-top2"),
                                      ("Routing", "moe-top2"), ("Precision", "fp16-overflow")])
def test_reports_leave_out_the_buttons_on_each_figure(make_dashboard, view, run):
    """Issue 13: the "⋯" export menus (and legend keys) showed in every report PNG."""
    from PySide6.QtWidgets import QToolButton, QWidget

    from moe_studio.gui.widgets.figure import FigureWidget
    from moe_studio.gui.main_window import DASHBOARDS, _load_class
    from moe_studio.gui.widgets.plots import CurvePlot
    from moe_studio.gui.commands.report import hide_controls
    from moe_studio.paths import sample_runs_dir

    d = make_dashboard(_load_class(dict(DASHBOARDS)[view]), [sample_runs_dir() / run])

    def on_figures():
        return [b for b in d.findChildren(QToolButton) if b.isVisibleTo(d)
                and isinstance(b.parent(), (CurvePlot, FigureWidget))]

    assert any(b.text() == "⋯" for b in on_figures())
    figures = [f for f in d.findChildren(QWidget) if isinstance(f, (CurvePlot, FigureWidget))
               and f.isVisibleTo(d)]
    hide_controls(d)
    assert not on_figures()
    assert all(f.isVisibleTo(d) for f in figures) and figures


def test_report_prints_the_costs_the_run_recorded(qapp, runs, tmp_path, capsys):
    import re

    import torch

    from moe_studio.config import load
    from moe_studio.engine.flops import count_flops
    from moe_studio.engine.model import MoEGPT
    from moe_studio.store.reader import RunReader
    rc = cli_main(["report", str(runs[0]), "--out", str(tmp_path / "c.png"), "--width", "700",
                   "--tabs", "Training"])
    assert rc == 0
    lines = [s.strip() for s in capsys.readouterr().out.splitlines() if s.strip().startswith("cost:")]
    assert len(lines) == 1, lines
    line = lines[0]
    num = r"([\d,]+(?:\.\d+)?(?:e[+-]?\d+)?)"

    def grab(pattern: str) -> float:
        m = re.search(pattern.replace("NUM", num), line)
        assert m, (pattern, line)
        return float(m.group(1).replace(",", ""))

    cfg = load(runs[0] / "config.toml")
    torch.manual_seed(0)
    model = MoEGPT(cfg.model, cfg.moe, context=cfg.data.context)
    tokens = cfg.data.batch_size * cfg.data.context
    ref = count_flops(model, cfg.data.context, batch_tokens=tokens)   # recomputed here
    assert grab(r"train NUM FLOP/token") == ref.train_active
    assert grab(r"forward NUM active") == ref.forward_active
    assert grab(r"NUM total\)") == ref.forward_total
    r = RunReader(runs[0])
    try:
        s = r.scalars(["cost/train_flops", "cost/flops_per_s"], member=-1)
        meta = r.meta
    finally:
        r.close()
    trained = s[s["name"] == "cost/train_flops"].sort_values("step")["value"].to_numpy()
    assert grab(r"trained NUM FLOP") == pytest.approx(trained[-1], rel=1e-5)
    assert grab(r"trained NUM FLOP") == pytest.approx(tokens * ref.train_active * cfg.train.steps, rel=1e-5)
    fps = s[s["name"] == "cost/flops_per_s"]["value"].to_numpy()
    assert grab(r"achieved NUM FLOP/s") == pytest.approx(float(np.median(fps)), rel=1e-5)
    assert grab(r"median of NUM steps") == len(fps) == cfg.train.steps
    fp = meta["memory_footprint"]
    for part in ("params", "grads", "optimizer", "activations"):
        assert grab(part + r" NUM") == pytest.approx(fp[part] / 2 ** 20, abs=6e-4)
    assert grab(r"memory of one step NUM MiB") == pytest.approx(fp["total"] / 2 ** 20, abs=6e-4)
    assert fp["total"] == sum(fp[k] for k in ("params", "grads", "optimizer", "activations"))
