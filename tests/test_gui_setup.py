"""The setup form generated from the schema: editors per knob, inline validation that
gates Train, presets, TOML round trip, the parameter label; the app entry point and the
main window rendered in both palettes."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest.importorskip("pytestqt")

from PySide6.QtCore import QSettings  # noqa: E402
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QLineEdit,  # noqa: E402
                               QMessageBox, QSpinBox)

from moe_studio.config import (PRESETS, SECTIONS, default, dumps,  # noqa: E402
                               problems, section_fields, to_dict)
from moe_studio.engine.params import count_params  # noqa: E402
from moe_studio.gui.formats import format_float, human_count  # noqa: E402
from moe_studio.gui.panels.setup import SetupPanel  # noqa: E402


def all_paths():
    return ["name"] + [f"{s}.{f.name}" for s in SECTIONS for f in section_fields(s)]


def test_every_knob_has_an_editor_of_its_kind_with_help(panel):
    assert panel.field_paths() == all_paths()
    for sec in SECTIONS:
        for f in section_fields(sec):
            path, md = f"{sec}.{f.name}", f.metadata
            w = panel.field_widget(path)
            assert md["help"] in w.toolTip(), path
            if md.get("choices"):
                assert isinstance(w, QComboBox)
                assert [w.itemText(i) for i in range(len(md["choices"]))] == list(md["choices"])
            elif md.get("kind") in ("path", "log"):
                assert isinstance(w, QLineEdit), path
            elif md.get("kind") == "layers":
                assert isinstance(w, QComboBox) and w.isEditable()
            elif f.type in (bool, "bool"):
                assert isinstance(w, QCheckBox), path
            elif f.type in (int, "int"):
                assert isinstance(w, QSpinBox), path
                assert (w.minimum(), w.maximum()) == (md["min"], md["max"]), path
            elif f.type in (float, "float"):
                assert isinstance(w, QDoubleSpinBox), path
                assert (w.minimum(), w.maximum()) == (md["min"], md["max"]), path


def test_invalid_edit_is_shown_inline_and_disables_train(qtbot, panel):
    top_k = panel.field_widget("moe.top_k")
    err = panel.error_label("moe.top_k")
    assert panel.is_valid() and err.isHidden()
    with qtbot.waitSignal(panel.validityChanged) as sig:
        top_k.setValue(9)  # 8 experts
    assert sig.args == [False]
    assert not panel.is_valid()
    assert not err.isHidden() and "moe.top_k (9) must be <= moe.n_experts (8)" in err.text()
    assert panel._rows["moe.top_k"].frame.property("invalid") is True
    assert "1 problem" in panel.section("moe").header.text()
    assert [e.path for e in panel.problems()] == ["moe.top_k"]

    # Fixing the other side of the rule also fixes it.
    with qtbot.waitSignal(panel.validityChanged) as sig:
        panel.field_widget("moe.n_experts").setValue(16)
    assert sig.args == [True]
    assert err.isHidden() and panel._rows["moe.top_k"].frame.property("invalid") is False
    assert panel.config().moe.top_k == 9 and panel.config().moe.n_experts == 16


def test_problem_in_a_closed_section_opens_it(panel):
    panel.set_expanded_sections([])
    assert not panel.section("train").is_expanded()
    panel.field_widget("train.min_lr").setText("1")  # > lr
    assert panel.section("train").is_expanded()
    assert "train.min_lr (1) must be <= train.lr (0.003)" in panel.error_label("train.min_lr").text()


def test_summary_links_go_to_the_field(qtbot, panel):
    panel.show()
    panel.set_expanded_sections([])
    panel.field_widget("moe.top_k").setValue(9)
    panel.field_widget("train.min_lr").setText("1")
    text = panel.summary_label.text()
    assert text.startswith("2 problems") and 'href="train.min_lr"' in text
    panel.summary_label.linkActivated.emit("train.min_lr")
    assert panel.section("train").is_expanded()
    assert panel.focusWidget() is panel.field_widget("train.min_lr")


def test_log_field_accepts_scientific_and_reports_garbage(panel):
    lr = panel.field_widget("train.lr")
    lr.setText("5e-4")  # min_lr is 3e-4
    assert panel.config().train.lr == pytest.approx(5e-4) and panel.is_valid()
    lr.setText("abc")
    assert not panel.is_valid()
    assert "train.lr must be a number" in panel.error_label("train.lr").text()
    assert panel.config().train.lr == pytest.approx(5e-4)  # last good value kept
    lr.setText("2e-3")
    assert panel.is_valid() and panel.error_label("train.lr").isHidden()


def test_every_editor_feeds_the_config(panel, tmp_path):
    corpus = tmp_path / "some.txt"   # it must exist now: the form checks (issue 13)
    corpus.write_text("text\n")
    panel.field_widget("name").setText("probe")
    panel.field_widget("data.corpus").setText(str(corpus))
    panel.field_widget("model.moe_layers").setEditText("1,3")
    panel.field_widget("moe.router").setCurrentText("noisy_topk")
    panel.field_widget("moe.n_shared").setValue(2)
    panel.field_widget("moe.capacity_factor").setValue(1.25)
    panel.field_widget("precision.mode").setCurrentText("bf16")
    panel.field_widget("train.steps").setValue(123)
    c = panel.config()
    assert (c.name, c.data.corpus, c.model.moe_layers, c.moe.router) == \
        ("probe", str(corpus), "1,3", "noisy_topk")
    assert c.moe.n_shared == 2 and c.moe.capacity_factor == 1.25
    assert c.precision.mode == "bf16" and c.train.steps == 123
    assert panel.is_valid(), [e.message for e in panel.problems()]


def test_path_field_embedded_button(qtbot, panel):
    from PySide6.QtWidgets import QPushButton
    corpus = panel.field_widget("data.corpus")
    corpus.setText("/somewhere")
    row = panel._rows["data.corpus"]
    embedded = [b for b in row.findChildren(QPushButton) if b.text() == "Embedded"][0]
    embedded.click()
    assert panel.config().data.corpus == "embedded"


def test_presets_load_and_editing_turns_custom(qtbot, panel):
    for name, make in PRESETS.items():
        with qtbot.waitSignal(panel.presetChanged) as sig:
            panel.set_preset(name)
        assert sig.args == [name]
        assert to_dict(panel.config()) == to_dict(make()), name
        assert panel.preset_combo.currentText() == name
        assert panel.is_valid() == (problems(make()) == [])
    panel.set_preset("Switch top-1")
    panel.field_widget("moe.n_experts").setValue(4)
    assert panel.preset_combo.currentText() == "Custom" and panel.current_preset() is None
    panel.field_widget("moe.n_experts").setValue(8)
    assert panel.preset_combo.currentText() == "Switch top-1"  # back to the preset exactly


def test_preset_combo_activation_loads(qtbot, panel):
    i = panel.preset_combo.findText("Dense baseline")
    panel.preset_combo.activated.emit(i)
    assert panel.config().model.moe_layers == "none"


def test_toml_round_trip_through_the_panel(qtbot, panel, tmp_path):
    panel.set_preset("fp16 overflow demo")
    panel.field_widget("moe.top_k").setValue(3)
    panel.field_widget("train.lr").setText("2.5e-4")
    panel.field_widget("train.min_lr").setText("1e-5")
    panel.field_widget("data.probe_text").setText('say "hi"\tthere')
    want = panel.config()
    path = tmp_path / "exp.toml"
    with qtbot.waitSignal(panel.configFileChanged):
        panel.save_toml(path)
    assert path.read_text(encoding="utf-8") == dumps(want)

    other = SetupPanel()
    qtbot.addWidget(other)
    assert other.load_toml(path) == []
    assert to_dict(other.config()) == to_dict(want)
    assert other.config_path == str(path)


def test_toml_out_of_range_value_is_reported(panel, tmp_path):
    path = tmp_path / "wild.toml"
    path.write_text("[moe]\nn_experts = 999\n", encoding="utf-8")
    notes = panel.load_toml(path)
    assert len(notes) == 1 and notes[0].startswith("moe.n_experts: 999")
    assert panel.config().moe.n_experts == 256


def test_bad_toml_raises_config_error(panel, tmp_path):
    from moe_studio.config import ConfigError
    path = tmp_path / "bad.toml"
    path.write_text("[moe]\nbogus = 1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="bogus"):
        panel.load_toml(path)


@pytest.mark.parametrize("preset", list(PRESETS))
def test_param_label_matches_count_params(panel, preset):
    panel.set_preset(preset)
    pc = count_params(PRESETS[preset]())
    text = panel.params_label.text()
    assert f"<b>{human_count(pc.total)}</b> total" in text
    assert f"<b>{human_count(pc.active)}</b> active per token" in text
    assert f"{pc.total:,}" in panel.params_label.toolTip()
    assert f"{pc.active:,}" in panel.params_label.toolTip()
    if pc.members > 1:
        assert f"{pc.members} members" in text and human_count(pc.run_total) in text


def test_param_label_follows_edits(panel):
    panel.field_widget("moe.n_experts").setValue(16)
    cfg = panel.config()
    assert f"{count_params(cfg).total:,}" in panel.params_label.toolTip()


def test_tab_order_follows_the_schema(panel):
    panel.set_expanded_sections(list(SECTIONS))
    panel.show()
    inputs = {id(panel.field_widget(p)): p for p in all_paths()}
    # A spin box or editable combo gives focus to its inner line edit.
    owner = {}
    for p in all_paths():
        w = panel.field_widget(p)
        owner[id(w)] = p
        for child in w.findChildren(QLineEdit):
            owner[id(child)] = p
    seen: list[str] = []
    w = panel.field_widget("name")
    for _ in range(600):
        p = owner.get(id(w))
        if p and (not seen or seen[-1] != p):
            seen.append(p)
        w = w.nextInFocusChain()
        if w is panel.field_widget("name"):
            break
    assert [p for p in seen if p in inputs.values()] == all_paths()


def test_formatting_helpers():
    assert human_count(999) == "999" and human_count(2_412_544) == "2.41 M"
    assert human_count(834_000) == "834 k" and human_count(3_000_000_000) == "3 B"
    assert format_float(3e-3) == "0.003" and format_float(1e-5) == "1e-5"
    assert format_float(65536.0) == "65536" and format_float(2.0 ** 32) == "4294967296"
    assert float(format_float(0.1 + 0.2)) == 0.1 + 0.2


# ---------------------------------------------------------------- window and app

def _window(qtbot, tmp_path, **kw):
    from moe_studio.gui.main_window import MainWindow
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    w = MainWindow(settings=settings, runs_dir=tmp_path / "runs", **kw)
    qtbot.addWidget(w)
    return w, settings


def test_new_resets_and_settings_remember_preset(qtbot, tmp_path):
    w, settings = _window(qtbot, tmp_path)
    w.setup_panel.set_preset("Switch top-1")
    assert settings.value("config/last_preset") == "Switch top-1"
    w.close()
    w2, _ = _window(qtbot, tmp_path)  # same settings file
    assert w2.setup_panel.current_preset() == "Switch top-1"
    w2.new_action.trigger()
    assert to_dict(w2.setup_panel.config()) == to_dict(default())


def test_open_bad_run_shows_the_one_line_error(qtbot, tmp_path):
    w, _ = _window(qtbot, tmp_path)
    w.show()
    assert not w.open_run_path(tmp_path / "no-such-run")
    box = w.findChild(QMessageBox, "warningBox")
    assert box is not None and box.isVisible()
    assert "no-such-run" in box.text() and "\n" not in box.text()
    box.close()


def test_shortcuts(qtbot, tmp_path):
    w, _ = _window(qtbot, tmp_path)
    keys = {a.text().replace("&", ""): a.shortcut().toString() for a in
            (w.new_action, w.open_config_action, w.save_config_action, w.open_run_action,
             w.train_action, w.pause_action, w.stop_action)}
    assert keys == {"New Experiment": "Ctrl+N", "Open Config…": "Ctrl+O",
                    "Save Config…": "Ctrl+S", "Open Run…": "Ctrl+Shift+O", "Train": "F5",
                    "Pause": "F6", "Stop": "Shift+F5"}


def test_app_opens_a_config_given_on_the_command_line(qtbot, tmp_path, monkeypatch):
    from PySide6.QtCore import QCoreApplication
    from moe_studio.config import save
    from moe_studio.gui import app as app_mod
    monkeypatch.setattr(app_mod, "QSettings",
                        lambda: QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat))
    cfg = default()
    cfg.name = "from-cli"
    cfg.moe.n_experts = 4
    save(cfg, tmp_path / "c.toml")
    from PySide6.QtGui import QGuiApplication
    names = (QCoreApplication.applicationName(), QCoreApplication.organizationName(),
             QGuiApplication.applicationDisplayName())
    try:
        app, win = app_mod.create_app(["moe-studio-gui", str(tmp_path / "c.toml"),
                                       "--runs-dir", str(tmp_path / "runs"), "--light"])
        qtbot.addWidget(win)
        assert QCoreApplication.applicationName() == "MoE Studio"
        assert QCoreApplication.organizationName() == "moe-studio"
        assert win.setup_panel.config().name == "from-cli"
        assert win.runs_dir == tmp_path / "runs"
        assert win.windowTitle().startswith("from-cli")
        app.aboutToQuit.disconnect()
    finally:
        from moe_studio.gui import theme
        theme.apply_palette(app, False)
        QCoreApplication.setApplicationName(names[0])
        QCoreApplication.setOrganizationName(names[1])
        QGuiApplication.setApplicationDisplayName(names[2])


def test_main_window_renders_in_both_palettes(qtbot, tmp_path):
    """Screenshots for people to look at: $MOE_STUDIO_SHOTS (e.g. /tmp/moe_shots) or tmp."""
    from PySide6.QtWidgets import QApplication
    from moe_studio.gui import theme
    out = Path(os.environ.get("MOE_STUDIO_SHOTS") or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    app = QApplication.instance()
    try:
        for dark in (False, True):
            w, _ = _window(qtbot, tmp_path / ("d" if dark else "l"))
            w.set_dark(dark)
            w.resize(1400, 900)
            w.show()
            qtbot.waitExposed(w)
            app.processEvents()  # the palette change is delivered as an event
            img = w.grab().toImage()
            assert not img.isNull() and img.height() == 900
            path = out / f"main_window_{'dark' if dark else 'light'}.png"
            assert img.save(str(path))
            # The window background follows the palette.
            bg = img.pixelColor(img.width() // 2, img.height() - 5)
            assert (bg.lightness() < 128) == dark
            w.close()
    finally:
        theme.apply_palette(app, False)


def test_export_dialog_defaults(qtbot, tmp_path):
    from moe_studio.gui.widgets.export_dialog import ExportDialog, has_parquet
    d = ExportDialog(tmp_path / "20260101-run", "run", tmp_path)
    qtbot.addWidget(d)
    assert d.fmt() == "csv"
    assert d.folder() == tmp_path / "20260101-run-export"
    i = d.format_combo.findData("parquet")
    assert d.format_combo.model().item(i).isEnabled() == has_parquet()
    d.folder_edit.setText("  ")
    assert not d.export_button.isEnabled()


def test_sample_run_menu_lists_sample_runs(qtbot, tmp_path, monkeypatch):
    import moe_studio.gui.main_window as mw
    from moe_studio.config import to_dict
    from moe_studio.store import RunWriter
    w, _ = _window(qtbot, tmp_path)
    monkeypatch.setattr(mw, "sample_runs_dir", lambda: tmp_path / "none")
    w._fill_sample_menu()
    assert [a.text() for a in w.sample_menu.actions()] == ["(no sample runs)"]

    samples = tmp_path / "samples"
    rw = RunWriter.create(samples, name="sample-a", config=to_dict(default()),
                          config_toml=dumps(default()))
    rw.close("finished")
    monkeypatch.setattr(mw, "sample_runs_dir", lambda: samples)
    w._fill_sample_menu()
    (action,) = w.sample_menu.actions()
    assert action.text().startswith("sample-a") and "finished" in action.text()
    action.trigger()
    assert w.dashboards[0].runs() == [Path(rw.run_dir)]


def test_main_help_exits_cleanly(capsys):
    from moe_studio.gui.app import main
    assert main(["moe-studio-gui", "--help"]) == 0
    assert "run folder" in capsys.readouterr().out


def test_editors_follow_a_palette_switch(panel, qapp):
    """No style sheet may pin the editors' palette: after light -> dark they are dark."""
    from PySide6.QtGui import QPalette
    from moe_studio.gui import theme
    was = theme.is_dark()
    panel.show()
    panel.field_widget("moe.top_k").setValue(99)      # a field with a red frame, too
    try:
        for dark in (False, True, False):
            theme.apply_palette(qapp, dark)
            qapp.processEvents()
            for path in ("model.n_layers", "name", "train.lr", "moe.top_k"):
                base = panel.field_widget(path).palette().color(QPalette.ColorRole.Base)
                assert (base.lightness() < 128) == dark, (path, dark, base.name())
    finally:
        theme.apply_palette(qapp, was)


# ---------------------------------------------------------------- issue 13: validation

def _retype(qtbot, w, text):
    """Select what the field holds and type ``text`` over it, as a person does."""
    from PySide6.QtCore import Qt
    w.setFocus()
    qtbot.keyClick(w, Qt.Key.Key_A, Qt.KeyboardModifier.ControlModifier)
    qtbot.keyClicks(w, text)


def test_a_missing_corpus_is_flagged_while_typing(qtbot, panel, tmp_path):
    panel.show()
    line = panel.field_widget("data.corpus")
    _retype(qtbot, line, str(tmp_path / "nope.txt"))
    assert not panel.is_valid()
    err = panel.error_label("data.corpus")
    assert err.isVisible() and "nope.txt' does not exist" in err.text()
    (tmp_path / "nope.txt").write_text("now it exists\n")
    _retype(qtbot, line, str(tmp_path / "nope.txt"))
    assert panel.is_valid() and err.isHidden()


def test_lr_zero_and_a_negative_lr_are_shown_as_typed_and_refused(qtbot, panel):
    from PySide6.QtCore import Qt
    panel.show()
    lr = panel.field_widget("train.lr")
    _retype(qtbot, lr, "-0.01")
    assert lr.text() == "-0.01"          # the minus sign is kept, not silently dropped
    assert not panel.is_valid()
    assert "train.lr (-0.01) must be >= 0" in panel.error_label("train.lr").text()
    _retype(qtbot, lr, "0")
    qtbot.keyClick(lr, Qt.Key.Key_Return)
    assert lr.text() == "0" and not panel.is_valid()
    assert "train.lr (0) must be > 0" in panel.error_label("train.lr").text()


def test_an_out_of_range_count_is_never_replaced_without_a_word(qtbot, panel):
    from PySide6.QtCore import Qt
    panel.show()
    members = panel.field_widget("ensemble.members")
    panel.section("ensemble").set_expanded(True)
    _retype(qtbot, members, "0")
    assert members.text() == "0"         # visible while typed
    qtbot.keyClick(members, Qt.Key.Key_Return)
    assert members.value() == 1 and panel.config().ensemble.members == 1
    msg = panel.error_label("ensemble.members")
    assert msg.isVisible() and msg.text() == "ensemble.members: 0 is outside 1 … 16; kept 1"
    assert panel.is_valid()               # what is kept is valid: a notice, not a problem
    # A spin box that refused a minus sign dropped it silently before.
    dropout = panel.field_widget("model.dropout")
    _retype(qtbot, dropout, "-0.01")
    assert dropout.text() == "-0.01"
    qtbot.keyClick(dropout, Qt.Key.Key_Return)
    assert "model.dropout: -0.01 is outside 0 … 0.9; kept 0" in \
        panel.error_label("model.dropout").text()
    _retype(qtbot, dropout, "0.12345678")   # inside the range, too many decimals
    qtbot.keyClick(dropout, Qt.Key.Key_Return)
    assert "model.dropout: 0.12345678 has more than 6 decimals; kept 0" in \
        panel.error_label("model.dropout").text()
    # The next real edit of the field clears its notice.
    _retype(qtbot, members, "3")
    assert members.value() == 3 and panel.error_label("ensemble.members").isHidden()


def test_a_message_appearing_moves_no_field(qtbot, panel):
    """The form kept still: the field below a new message, and every field below the
    summary, stay where they were (they jumped ~20 px, so the next click missed)."""
    from PySide6.QtCore import QPoint
    panel.resize(420, 900)
    panel.show()
    qtbot.waitExposed(panel)
    below = [panel.field_widget(p) for p in ("moe.router", "train.steps", "model.n_layers")]

    def ys():
        return [w.mapTo(panel, QPoint(0, 0)).y() for w in below]

    before = ys()
    _retype(qtbot, panel.field_widget("moe.top_k"), "9")   # 8 experts: a problem
    qtbot.wait(10)
    assert not panel.is_valid() and panel.error_label("moe.top_k").isVisible()
    assert ys() == before


def test_gui_command_passes_the_path_to_the_app(monkeypatch):
    """``moe-studio gui RUN`` opens RUN: the path reached the app's argument parser
    (it was taken for the program name and dropped)."""
    from moe_studio.gui import app as app_mod
    seen = []
    monkeypatch.setattr(app_mod, "main", lambda argv: seen.append(
        app_mod.parse_args(argv[1:]).path) or 0)
    from moe_studio.cli import main as cli_main
    assert cli_main(["gui", "sample_runs/moe-top2"]) == 0
    assert seen == ["sample_runs/moe-top2"]


def test_a_config_too_large_for_this_machine_is_refused_in_the_form(qtbot, panel):
    """The memory check runs with the form's validation (issue 19): a model that cannot
    fit is named before Train, not as a run that fails after it starts."""
    from moe_studio.engine.memory import corpus_bytes, estimate, fmt_bytes, machine_memory
    available = machine_memory()
    if not available:
        pytest.skip("this machine does not say how much memory it has")
    panel.show()
    panel.section("ensemble").set_expanded(True)
    assert panel.is_valid()
    _retype(qtbot, panel.field_widget("model.d_model"), "8192")
    _retype(qtbot, panel.field_widget("ensemble.members"), "16")
    cfg = panel.config()
    # 16 members x 16 bytes per parameter, parameters counted here from the shapes
    m = cfg.model
    assert (m.d_model, cfg.ensemble.members) == (8192, 16)
    attention = m.n_layers * 4 * m.d_model * m.d_model
    assert 16 * 16 * attention > available   # far past this machine, whatever else counts
    assert estimate(cfg, corpus_bytes(cfg.data.corpus)).total > available
    assert not panel.is_valid()
    text = panel.summary_label.text()
    assert panel.summary_label.isVisible() and "1 problem" in text
    assert "needs at least" in text and fmt_bytes(available) in text
    assert "parameters and optimizer state" in text
    _retype(qtbot, panel.field_widget("ensemble.members"), "1")
    _retype(qtbot, panel.field_widget("model.d_model"), "128")
    assert panel.is_valid() and panel.summary_label.isHidden()
