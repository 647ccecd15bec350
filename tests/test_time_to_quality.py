"""``bench time-to-quality`` on a tiny schedule: the target is the baseline's last
validation loss, and times to quality are read off the recorded curves."""
import pytest

from moe_studio.bench import time_to_quality as ttq
from moe_studio.config import presets


def test_quick_run_reads_time_to_quality_off_the_curves(tmp_path):
    text = tmp_path / "tiny.txt"
    text.write_text(("To be, or not to be, that is the question:\n"
                     "Whether 'tis nobler in the mind to suffer\n") * 400)
    r = ttq.run(json_out=True, quick=True, corpus=text)
    base = r["curves"]["baseline"]
    assert r["target_val_loss"] == base[-1][2] and r["baseline"]["train_s"] == base[-1][1]
    for name in ("dense", "moe"):
        curve, res = r["curves"][name], r[name]
        assert [c[0] for c in curve] == [3, 6]
        hits = [c for c in curve if c[2] <= r["target_val_loss"]]
        if hits:
            assert res["step"] == hits[0][0] and res["train_s"] == pytest.approx(hits[0][1], abs=0.01)
            assert res["ratio_to_baseline"] == pytest.approx(hits[0][1] / base[-1][1], abs=2e-3)
        else:
            assert res["step"] is None and res["ratio_to_baseline"] is None
    (b,) = r["budgets"].values()
    assert b["ok"] == (r["moe"]["ratio_to_baseline"] is not None and
                       r["moe"]["ratio_to_baseline"] <= ttq.MOE_GOAL)
    assert r["models"]["moe"]["params_active"] < r["models"]["moe"]["params_total"]


def test_missing_corpus_is_one_clear_line(monkeypatch, tmp_path):
    monkeypatch.setattr(ttq, "__file__", str(tmp_path / "a" / "b" / "c.py"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="needs ../shared/data/tinyshakespeare.txt"):
        ttq.shared_corpus()


def test_recipe_presets_are_the_default_models_without_the_monitor():
    moe, dense = presets.ttq_moe(), presets.ttq_dense()
    assert (moe.moe.n_experts, moe.moe.top_k, moe.moe.d_expert) == (8, 2, 256)
    assert dense.model.moe_layers == "none" and not moe.precision.headroom
