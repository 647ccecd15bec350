"""An inspection run (a pretrained checkpoint routed over a corpus) in the app: the
Gates, Experts, Routing and Precision views open it unchanged, Training and Ensemble say
it has no training, and two inspections compare side by side on the same tokens."""
from __future__ import annotations

import re

import numpy as np
import pytest

pytest.importorskip("transformers")

from moe_studio.gui.views.compare import CompareDashboard  # noqa: E402
from moe_studio.gui.views.ensemble import EnsembleDashboard  # noqa: E402
from moe_studio.gui.views.experts import ExpertsDashboard  # noqa: E402
from moe_studio.gui.views.gates import GateDashboard  # noqa: E402
from moe_studio.gui.views.inspection_runs import NO_TRAINING  # noqa: E402
from moe_studio.gui.views.precision import PrecisionDashboard  # noqa: E402
from moe_studio.gui.views.routing import RoutingDashboard  # noqa: E402
from moe_studio.gui.views.training import TrainingDashboard  # noqa: E402
from moe_studio.store import open_run  # noqa: E402

from moe_studio.engine.inspection import tiny as hf_tiny  # noqa: E402

TEXT = ("Routers send each token to a few experts. def f(x):\n    return x * 2\n" * 30)


def _inspect(model, corpus, runs, tokens: int, precision_every: int = 2):
    """An inspection of ``model`` over ``corpus`` run to its end; its run folder."""
    from moe_studio.engine.inspection import InspectOptions
    from moe_studio.engine.inspection.inspector import Inspector

    ins = Inspector(InspectOptions(model=str(model), corpus=str(corpus), tokens=tokens,
                                   seq_len=32, batch_size=2, precision_every=precision_every),
                    runs_dir=runs)
    while not ins.done:
        ins.step()
    ins.close()
    return ins.run_dir


@pytest.fixture(scope="module")
def inspections(tmp_path_factory):
    """Two inspections of the same corpus: a Mixtral and a Qwen3-MoE checkpoint, each
    with its own tokenizer (as two families have)."""
    root = tmp_path_factory.mktemp("gui-inspect")
    (root / "corpus.txt").write_text(TEXT, encoding="utf-8")
    toks = {"mixtral": hf_tiny.train_tokenizer([TEXT]),
            "qwen3_moe": hf_tiny.train_tokenizer(["experts route tokens; " * 50, TEXT.upper()])}
    out = []
    for fam in ("mixtral", "qwen3_moe"):
        hf_tiny.build(fam, root / fam, toks[fam])
        out.append(_inspect(root / fam, root / "corpus.txt", root / "runs", tokens=400))
    return out


@pytest.fixture(scope="module")
def layouts(tmp_path_factory, inspections):
    """Inspections of the other router layouts: DeepSeek-V3 (sigmoid scores, a dense
    first layer) and Switch Transformers (top-1 over capacity, the encoder routed)."""
    from moe_studio.engine.inspection import installed_families

    root = tmp_path_factory.mktemp("gui-layouts")
    (root / "corpus.txt").write_text(TEXT, encoding="utf-8")
    tok = hf_tiny.train_tokenizer([TEXT])
    have = {f.model_type for f in installed_families()}
    out = {"mixtral": inspections[0]}
    for fam in ("deepseek_v3", "switch_transformers"):
        if fam not in have:
            continue
        hf_tiny.build(fam, root / fam, tok)
        out[fam] = _inspect(root / fam, root / "corpus.txt", root / "runs", tokens=300)
    return out


@pytest.mark.parametrize("fam", ["mixtral", "deepseek_v3", "switch_transformers"])
def test_routing_views_open_an_inspection(make_dashboard, layouts, fam):
    if fam not in layouts:
        pytest.skip(f"{fam} is not in the installed transformers")
    run = layouts[fam]
    with open_run(run) as r:
        n_steps = r.meta["total_steps"]
        blocks = r.meta["moe_blocks"]
        linears = [m for m in r.meta["precision_modules"] if m.endswith(("q_proj", ".q"))]
    assert linears
    gates = make_dashboard(GateDashboard, [run])
    steps, bands = gates.percentile_bands(None)
    assert list(steps) == list(range(1, n_steps + 1)) and np.isfinite(bands).all()
    assert "finished" in gates.status_text() and not gates.dense_notice()

    experts = make_dashboard(ExpertsDashboard, [run])
    steps, tpe = experts.tokens_per_expert()
    assert tpe.shape == (n_steps, len(blocks), hf_tiny.EXPERTS) and tpe.sum() > 0

    routing = make_dashboard(RoutingDashboard, [run])
    arrays, meta, desc = routing.current()
    assert arrays["probs"].shape[0] == len(blocks) and "probe at step 1" in desc
    shares = routing.share_matrices()
    dom, rows = shares["domain"]
    assert np.isfinite(dom).all() and np.allclose(dom.sum(-1), 1.0)

    # 895 px: the view's width in the 1280 x 800 window beside the experiment panel
    prec = make_dashboard(PrecisionDashboard, [run], size=(895, 560))
    assert prec.has_data() and prec.table_rows()
    assert set(linears) <= set(prec.modules())
    # a checkpoint's blocks ("model.layers.3.", "encoder.block.1.") group the heatmap's
    # rows as ours do: every module inside a numbered block sits in its block's group
    in_block = [m for m in prec.modules() if re.search(r"(?:^|\.)(?:layers|block|h)\.\d+\.", m)]
    grouped = sum(n for name, n in _named_groups(prec.heatmap.row_groups()))
    assert in_block and grouped == len(in_block), prec.heatmap.row_groups()
    # long module names do not squeeze the Kind list ("activatio") nor the Format list
    from PySide6.QtWidgets import QApplication
    QApplication.processEvents()          # the controls' row laid out with the lists filled
    for combo in (prec.kind_combo, prec.format_combo):
        assert combo.width() >= combo.sizeHint().width(), (combo.currentText(), combo.width())
    assert prec.minimumSizeHint().width() <= 895   # and the view still fits beside the form
    assert "an inspection does not train" in prec.scale_plot.placeholder()


def _named_groups(groups):
    return [(name, b - a) for name, a, b in (groups or []) if name and name != "emb"]


def test_training_and_ensemble_say_an_inspection_has_none(make_dashboard, inspections):
    training = make_dashboard(TrainingDashboard, inspections[:1])
    assert training.plot("loss").placeholder() == NO_TRAINING
    ens = make_dashboard(EnsembleDashboard, inspections[:1])
    assert ens.members_page.currentIndex() == 0
    assert "An inspection has no ensemble" in ens.empty.text()


def test_two_inspections_compare_side_by_side(qtbot, inspections):
    dash = CompareDashboard()
    qtbot.addWidget(dash)
    dash.resize(1200, 800)
    dash.show()
    dash.set_runs(inspections)
    rows = dash.summary_rows()
    assert len(rows) == 2
    # the curves that need training say why they are empty; the load CV per batch is drawn
    assert dash.plot("train").placeholder() == NO_TRAINING
    assert dash.plot("val").placeholder() == NO_TRAINING
    assert dash.plot("balance").placeholder() == "" and len(dash.plot("balance").series_keys()) == 2
    diff = dash.config_diff()
    assert len(diff) > 0   # two families: the model section differs
    dash.tabs.setCurrentIndex(1)
    dash.set_pair(0, 1, "Routing")
    left, right = dash.pair()
    a, b = left.current()[0], right.current()[0]
    # the same corpus, so the same probe text byte for byte, cut into different model
    # tokens by the two tokenizers and routed by two different models
    np.testing.assert_array_equal(a["tokens"], b["tokens"])
    assert a["probs"].shape[1] == b["probs"].shape[1] == a["tokens"].size
    assert not np.array_equal(a["token_start"], b["token_start"])
    assert not np.array_equal(a["probs"], b["probs"])
    dash.close()


def _window(qtbot, tmp_path):
    from PySide6.QtCore import QSettings

    from moe_studio.gui.main_window import MainWindow
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    w = MainWindow(settings=settings, runs_dir=tmp_path / "runs", engine_mode="process")
    qtbot.addWidget(w)
    w.show()
    return w


def _type(qtbot, widget, text: str) -> None:
    from PySide6.QtCore import Qt
    qtbot.mouseClick(widget, Qt.MouseButton.LeftButton)
    qtbot.keyClick(widget, Qt.Key.Key_A, Qt.KeyboardModifier.ControlModifier)
    qtbot.keyClicks(widget, text)


@pytest.mark.slow
def test_inspect_dialog_runs_an_inspection_in_the_engine_process(qtbot, tmp_path, inspections,
                                                                 monkeypatch):
    """File > Inspect a Checkpoint…: the model folder and a corpus folder picked with the
    Browse… and Folder… buttons (the system's folder picker answers for the user), a
    token budget typed, the memory estimate shown before Start, the run in the engine
    process over the picked corpus's domains."""
    from PySide6.QtCore import Qt
    from PySide6.QtWidgets import QFileDialog

    from moe_studio.engine.device import resolve_device
    from moe_studio.engine.inspection import InspectOptions
    from moe_studio.engine.inspection.families import FAMILIES
    from moe_studio.engine.inspection.loading import plan_memory, read_config
    from moe_studio.gui.widgets.inspect_dialog import InspectDialog

    folder = inspections[0].parents[1] / "mixtral"
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "code.py").write_text("def f(x):\n    return x * 2\n" * 40, encoding="utf-8")
    (corpus / "prose.txt").write_text("Routers send each token to a few experts. " * 40,
                                      encoding="utf-8")
    picked = {"Hugging Face model folder": str(folder),
              "Corpus folder (one domain per file)": str(corpus)}
    monkeypatch.setattr(QFileDialog, "getExistingDirectory",
                        staticmethod(lambda _parent, caption, _start: picked[caption]))
    w = _window(qtbot, tmp_path)
    try:
        w.inspect_action.trigger()          # File > Inspect a Checkpoint…
        dlg = w.findChild(InspectDialog)
        assert dlg is not None and dlg.isVisible() and not dlg.start_button.isEnabled()
        qtbot.mouseClick(dlg.model_button, Qt.MouseButton.LeftButton)
        qtbot.mouseClick(dlg.corpus_folder_button, Qt.MouseButton.LeftButton)
        assert dlg.model_edit.text() == str(folder) and dlg.corpus_edit.text() == str(corpus)
        _type(qtbot, dlg.tokens_spin, "300")
        qtbot.waitUntil(lambda: dlg.start_button.isEnabled(), timeout=90_000)
        assert "Mixtral" in dlg.estimate_label.text() and "parameters" in dlg.estimate_label.text()
        d = InspectOptions(model="")      # the dialog's seq_len and batch size
        want = plan_memory(folder, read_config(folder), FAMILIES["mixtral"], dtype="auto",
                           device=str(resolve_device("auto")),
                           tokens_per_batch=d.seq_len * d.batch_size)
        assert dlg.estimate()["needed"] == want.needed and want.describe()[:40] in \
            dlg.estimate_label.text()
        with qtbot.waitSignal(w.controller.finished, timeout=180_000) as fin:
            qtbot.mouseClick(dlg.start_button, Qt.MouseButton.LeftButton)
        assert fin.args == ["finished"]
        run = w.controller.run_dir
        with open_run(run) as r:
            assert r.meta["kind"] == "inspection" and r.meta["tokens_routed"] <= 300
            assert r.config["inspect"]["tokens"] == 300
            assert r.config["inspect"]["corpus"] == str(corpus)
            assert sorted(r.meta["domain_names"]) == ["code", "prose"]
        assert [str(p) for p in w._shown_runs] == [run]
    finally:
        assert w.controller.shutdown(30_000)
        w.close()


@pytest.mark.slow
def test_inspect_dialog_refuses_a_pickle_folder_before_start(qtbot, tmp_path):
    from moe_studio.gui.widgets.inspect_dialog import InspectDialog

    bad = tmp_path / "pickled"
    bad.mkdir()
    (bad / "config.json").write_text('{"model_type": "mixtral", "num_local_experts": 8}')
    (bad / "pytorch_model.bin").write_bytes(b"\x80\x02")
    w = _window(qtbot, tmp_path)
    try:
        w.inspect_action.trigger()
        dlg = w.findChild(InspectDialog)
        _type(qtbot, dlg.model_edit, str(bad))
        qtbot.waitUntil(lambda: dlg.estimate() is not None, timeout=90_000)
        assert "refused, a pickle can run code" in dlg.estimate_label.text()
        assert not dlg.start_button.isEnabled()
        from PySide6.QtCore import Qt
        from PySide6.QtWidgets import QDialogButtonBox
        qtbot.mouseClick(dlg.buttons.button(QDialogButtonBox.StandardButton.Cancel),
                         Qt.MouseButton.LeftButton)
        assert not dlg.isVisible()
    finally:
        w.close()


@pytest.mark.parametrize("mode", ["thread", "process"])
def test_controller_stop_keeps_an_inspection(qtbot, tmp_path, inspections, mode):
    """Stop after the first batch, in the engine process (the app's default) and in a
    thread: the run ends stopped with what it recorded, totals included."""
    from moe_studio.engine.inspection import InspectOptions
    from moe_studio.gui.run.worker import TrainingController

    folder = inspections[0].parents[1] / "mixtral"
    ctl = TrainingController(mode=mode)
    opts = InspectOptions(model=str(folder), tokens=6000, seq_len=16, batch_size=1,
                          precision_every=0)
    ctl.progress.connect(lambda _info: ctl.stop())      # Stop after the first batch
    try:
        with qtbot.waitSignal(ctl.finished, timeout=120_000) as fin:
            ctl.start(opts, tmp_path / "runs")
        assert fin.args == ["stopped"]
        with open_run(ctl.run_dir) as r:
            assert r.meta["kind"] == "inspection" and r.status == "stopped"
            done = int(r.tensor_steps("moe/tokens_per_expert")[-1])
            assert 1 <= done < r.meta["total_steps"]
            _, tpd = r.tensor("inspect/tokens_per_domain")
            assert 0 < tpd.sum() <= 16 * done   # a domain's last window may be shorter
    finally:
        assert ctl.shutdown(30_000)


def test_route_button_routes_typed_text_through_the_inspected_checkpoint(make_dashboard,
                                                                         inspections, qtbot):
    """Issue 17: Route on an inspection run goes through the pretrained checkpoint (it said
    there were no weights); what is shown is what the engine routes for that text."""
    from PySide6.QtCore import Qt
    from moe_studio.engine.inspection.routing import probe_snapshot
    from moe_studio.gui.views.routing import SOURCE_CUSTOM
    run = inspections[0]
    d = make_dashboard(RoutingDashboard, [run], size=(1280, 800))
    labels = [d.weights_combo.itemText(i) for i in range(d.weights_combo.count())]
    assert labels == ["pretrained model mixtral"]
    assert d.route_button.isEnabled() and not d.probe_edit.isReadOnly()
    text = "def g(y):\n    return y + 1"
    d.probe_edit.setFocus()
    for i, line in enumerate(text.split("\n")):
        qtbot.keyClicks(d.probe_edit, line)
        if i == 0:
            qtbot.keyClick(d.probe_edit, Qt.Key.Key_Return, Qt.KeyboardModifier.ShiftModifier)
    assert d.probe_edit.toPlainText() == text
    with qtbot.waitSignal(d.task.finished, timeout=120_000):
        qtbot.mouseClick(d.route_button, Qt.MouseButton.LeftButton)
    assert d.source() == SOURCE_CUSTOM, d.probe_note.text()
    a, meta, what = d.current()
    assert "custom text" in what and "mixtral" in what
    assert "tokens through" in d.probe_note.text()
    want, _ = probe_snapshot(run, text)
    for k in ("tokens", "topk_idx", "topk_weight", "probs", "token_start", "model_token"):
        np.testing.assert_array_equal(a[k], want[k], err_msg=k)
    assert d.token_map.matrix().shape[1] == len(text.encode())


def test_experts_view_shows_which_expert_pairs_fire_together(make_dashboard, inspections,
                                                             qtbot):
    """Issue 17: ``inspect/coselect`` as a heatmap with a layer choice in Experts; a
    training run (no such counts) does not show it."""
    from PySide6.QtCore import Qt
    from moe_studio.paths import sample_runs_dir
    run = inspections[0]
    with open_run(run) as r:
        _, cos = r.tensor("inspect/coselect")
        blocks = r.meta["moe_blocks"]
    d = make_dashboard(ExpertsDashboard, [run], size=(1280, 800))
    view = d.coselect
    assert d.totals.isVisible() and not view.isVisible()     # "Load per domain" comes first
    bar = d.totals.tabBar()
    qtbot.mouseClick(bar, Qt.MouseButton.LeftButton, pos=bar.tabRect(1).center())
    assert view.isVisible() and bar.tabText(1) == "Expert pairs"
    assert [view.layer_combo.itemText(i) for i in range(view.layer_combo.count())] == \
        [f"L{b}" for b in blocks]
    E = cos.shape[-1]
    for j in range(len(blocks)):
        if j:
            view.layer_combo.setFocus()
            qtbot.keyClick(view.layer_combo, Qt.Key.Key_Down)
        assert view.layer_index() == j
        shown = view.heatmap.matrix()
        assert shown.shape == (E, E)
        for a in range(E):
            for b in range(E):
                if a == b or cos[j, a, a] == 0:
                    assert np.isnan(shown[a, b])
                else:
                    assert shown[a, b] == pytest.approx(cos[j, a, b] / cos[j, a, a], rel=1e-6)
        assert f"L{blocks[j]}" in view.heatmap.title()
    trained = make_dashboard(ExpertsDashboard, [sample_runs_dir() / "moe-top2"], size=(1280, 800))
    assert not trained.totals.isVisible() and not trained.coselect.has_data()
    assert not trained.domain_load.has_data()


def test_experts_view_shows_each_domains_load_over_the_whole_corpus(make_dashboard, qtbot,
                                                                     tmp_path, inspections):
    """Issue 17: ``inspect/load_per_domain`` as a domain x expert heatmap in Experts. The
    shares are checked against the per-batch loads the run also recorded, summed over
    each domain's batches (batches go domain by domain: the cumulative token count says
    where each domain ends)."""
    from PySide6.QtCore import Qt

    from moe_studio.metrics.routing import group_total_variation

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "code.py").write_text("def f(x):\n    return x * 2\n" * 30, encoding="utf-8")
    (corpus / "prose.txt").write_text("Routers send each token to a few experts. " * 30,
                                      encoding="utf-8")
    run_dir = _inspect(inspections[0].parents[1] / "mixtral", corpus, tmp_path / "runs",
                       tokens=400, precision_every=0)
    with open_run(run_dir) as r:
        steps, tpe = r.tensor_series("moe/tokens_per_expert")     # [S, L, E]
        scal = r.scalars()
        names, blocks = r.meta["domain_names"], r.meta["moe_blocks"]
        _, tpd = r.tensor("inspect/tokens_per_domain")
    cum = scal[scal["name"] == "tokens"].sort_values("step")["value"].to_numpy()
    ends = np.cumsum(tpd)
    domain_of_step = np.searchsorted(ends, cum, side="left")
    ref = np.stack([tpe[domain_of_step == d].sum(axis=0) for d in range(len(names))])
    assert len(names) == 2 and (ref.sum(axis=(1, 2)) > 0).all()

    d = make_dashboard(ExpertsDashboard, [run_dir], size=(1280, 800))
    view = d.domain_load
    assert d.totals.isVisible() and view.isVisible()
    for j in range(len(blocks)):
        if j:
            view.layer_combo.setFocus()
            qtbot.keyClick(view.layer_combo, Qt.Key.Key_Down)
        assert view.layer_index() == j
        want = ref[:, j] / ref[:, j].sum(axis=-1, keepdims=True)
        np.testing.assert_allclose(view.heatmap.matrix(), want, rtol=1e-6)
        assert view.heatmap.y_labels() == names
        E = want.shape[1]     # as Routing's map: experts e0.., the scale centred on 1/E
        assert view.heatmap.x_labels() == [f"e{e}" for e in range(E)]
        assert view.heatmap.levels() == pytest.approx((0.0, 2.0 / E))
        tv = 0.5 * np.abs(want[0] - want[1]).sum()
        assert tv == pytest.approx(float(group_total_variation(want)))
        assert view.heatmap.title().endswith(f"whole corpus · L{blocks[j]}")
        assert view.spread_label.text() == f"domains differ by {tv:.2f}"


@pytest.mark.parametrize("fam", ["zaya", "longcat_flash"])
def test_classes_that_are_not_experts_are_named_in_the_views(make_dashboard, tmp_path, fam):
    """ZAYA1's router also chooses to skip the layer (its last class), LongCat-Flash's
    its zero-computation experts (the classes after its n_routed_experts, which return
    their input): an inspection names them, and Experts and Routing label them so
    instead of e3, e5, ..."""
    pytest.importorskip(f"transformers.models.{fam}")
    import transformers

    (tmp_path / "corpus.txt").write_text(TEXT, encoding="utf-8")
    hf_tiny.build(fam, tmp_path / fam, hf_tiny.train_tokenizer([TEXT]))
    cfg = transformers.AutoConfig.from_pretrained(tmp_path / fam)
    run = _inspect(tmp_path / fam, tmp_path / "corpus.txt", tmp_path / "runs", tokens=300)
    with open_run(run) as r:
        E = r.config["moe"]["n_experts"]
        names = r.meta["expert_names"]
    if fam == "zaya":       # the experts, then the skip class
        want = [f"e{e}" for e in range(E - 1)] + ["skip"]
    else:                   # the routed experts, then the zero-computation ones
        routed = cfg.n_routed_experts
        assert 0 < routed < E == routed + cfg.zero_expert_num
        want = [f"e{e}" for e in range(routed)] + [f"id{j}" for j in range(E - routed)]
    assert names == want
    experts = make_dashboard(ExpertsDashboard, [run], size=(1280, 800))
    assert experts.layer_map.x_labels() == want
    assert experts.domain_load.heatmap.x_labels() == want
    routing = make_dashboard(RoutingDashboard, [run], size=(1280, 800))
    assert routing.domain_map.x_labels() == want
    assert all(y.split()[-1] in want for y in routing.token_map.y_labels())
    assert want[-1] in routing.legend.text()
