"""An inspection run (a pretrained checkpoint routed over a corpus) in the app: the
Gates, Experts, Routing and Precision views open it unchanged, Training and Ensemble say
it has no training, and two inspections compare side by side on the same tokens."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("transformers")

from moe_studio.gui.compare_dashboard import CompareDashboard  # noqa: E402
from moe_studio.gui.ensemble_dashboard import EnsembleDashboard  # noqa: E402
from moe_studio.gui.experts_dashboard import ExpertsDashboard  # noqa: E402
from moe_studio.gui.gate_dashboard import GateDashboard  # noqa: E402
from moe_studio.gui.inspection_runs import NO_TRAINING  # noqa: E402
from moe_studio.gui.precision_dashboard import PrecisionDashboard  # noqa: E402
from moe_studio.gui.routing_dashboard import RoutingDashboard  # noqa: E402
from moe_studio.gui.training_dashboard import TrainingDashboard  # noqa: E402
from moe_studio.store import open_run  # noqa: E402

import hf_tiny  # noqa: E402

TEXT = ("Routers send each token to a few experts. def f(x):\n    return x * 2\n" * 30)


@pytest.fixture(scope="module")
def inspections(tmp_path_factory):
    """Two inspections of the same corpus: a Mixtral and a Qwen3-MoE checkpoint."""
    from moe_studio.engine.inspection import InspectOptions
    from moe_studio.engine.inspection.inspector import Inspector

    root = tmp_path_factory.mktemp("gui-inspect")
    (root / "corpus.txt").write_text(TEXT, encoding="utf-8")
    tok = hf_tiny.train_tokenizer([TEXT])
    out = []
    for fam in ("mixtral", "qwen3_moe"):
        hf_tiny.build(fam, root / fam, tok)
        ins = Inspector(InspectOptions(model=str(root / fam), corpus=str(root / "corpus.txt"),
                                       tokens=400, seq_len=32, batch_size=2, precision_every=2),
                        runs_dir=root / "runs")
        while not ins.done:
            ins.step()
        ins.close()
        out.append(ins.run_dir)
    return out


def test_routing_views_open_an_inspection(make_dashboard, inspections):
    run = inspections[0]
    with open_run(run) as r:
        n_steps = r.meta["total_steps"]
        blocks = r.meta["moe_blocks"]
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

    prec = make_dashboard(PrecisionDashboard, [run])
    assert prec.has_data() and prec.table_rows()
    assert any(m.endswith("q_proj") for m in prec.modules())


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
    diff = dash.config_diff()
    assert len(diff) > 0   # two families: the model section differs
    dash.tabs.setCurrentIndex(1)
    dash.set_pair(0, 1, "Routing")
    left, right = dash.pair()
    a, b = left.current()[0], right.current()[0]
    # the same corpus, so the same probe text, routed by two different models
    np.testing.assert_array_equal(a["tokens"], b["tokens"])
    assert not np.array_equal(a["probs"], b["probs"])
    dash.close()
