"""engine.probe: routing any text through a recorded run's weights gives what the
trainer's own ``route_tokens`` gives for the same model."""
from __future__ import annotations

import numpy as np
import pytest

from moe_studio.config import ExperimentConfig, dumps, to_dict
from moe_studio.engine import probe
from moe_studio.store import RunWriter, open_run

from routing_helpers import train_tiny_run

TEXT = "def f(x):\n    return x * 2  # doubled\nThe quick brown fox jumps over the lazy dog. é ✓"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return train_tiny_run(tmp_path_factory.mktemp("probe"))


def test_list_checkpoints_oldest_first(trained):
    cks = probe.list_checkpoints(trained.run_dir)
    assert [(c.step, c.kind) for c in cks] == [(6, "checkpoint"), (12, "checkpoint")]
    assert probe.latest_checkpoint(trained.run_dir).step == 12
    assert "step 12" in cks[-1].label


def test_route_text_equals_the_trainers_route_tokens(trained):
    got = probe.route_text(trained.run_dir, TEXT)            # latest = the final checkpoint
    tokens = np.frombuffer(TEXT.encode(), np.uint8)
    want = trained.route_tokens(tokens)
    np.testing.assert_array_equal(got["tokens"], tokens)
    assert got["tokens"].dtype == np.uint8 and got["domains"].dtype == np.uint8
    assert (got["domains"] == 2).all()                       # the "custom" probe domain
    for k in ("topk_idx", "topk_weight", "probs"):
        assert got[k].dtype == want[k].dtype
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    assert got["probs"].shape == (2, tokens.size, 4) and got["topk_idx"].shape == (2, tokens.size, 2)


def test_recorded_probe_reproduced_and_meta(trained):
    """The probe recorded at the last step, routed again through the final checkpoint."""
    snap = open_run(trained.run_dir).snapshot("routing/probe")
    assert snap.step == 12
    text = snap.arrays["tokens"].tobytes().decode("utf-8")
    arrays, meta = probe.probe_snapshot(trained.run_dir, text)
    for k in ("topk_idx", "topk_weight", "probs"):
        np.testing.assert_array_equal(arrays[k], snap.arrays[k], err_msg=k)
    assert meta["domain_names"] == ["prose", "python", "custom"]
    assert meta["moe_blocks"] == [0, 1] and meta["top_k"] == 2 and meta["n_experts"] == 4
    assert meta["step"] == 12


def test_an_older_checkpoint_routes_differently(trained):
    ck6 = probe.list_checkpoints(trained.run_dir)[0]
    old = probe.route_text(trained.run_dir, TEXT, checkpoint=ck6)
    by_path = probe.route_text(trained.run_dir, TEXT, checkpoint=ck6.path)
    np.testing.assert_array_equal(old["probs"], by_path["probs"])
    new = probe.route_text(trained.run_dir, TEXT)
    assert not np.array_equal(old["probs"], new["probs"])


def test_fp16_safetensors_weights(trained, tmp_path):
    from moe_studio.samples import export_weights

    export_weights(trained, trained.run_dir / "weights.safetensors")
    try:
        cks = probe.list_checkpoints(trained.run_dir)
        assert cks[-1].kind == "weights" and cks[-1].step == 12
        assert probe.latest_checkpoint(trained.run_dir).kind == "checkpoint"  # wins the tie
        got = probe.route_text(trained.run_dir, TEXT, checkpoint=cks[-1])
        want = trained.route_tokens(np.frombuffer(TEXT.encode(), np.uint8))
        # fp16 weights: the same routing up to rounding
        np.testing.assert_allclose(got["probs"].astype(float), want["probs"].astype(float), atol=5e-3)
        assert (got["topk_idx"] == want["topk_idx"]).mean() > 0.95
    finally:
        (trained.run_dir / "weights.safetensors").unlink()


def test_clear_errors(trained, tmp_path):
    with pytest.raises(ValueError, match="empty"):
        probe.route_text(trained.run_dir, "   \n")
    cfg = ExperimentConfig()
    w = RunWriter.create(tmp_path, name="no-weights", config=to_dict(cfg), config_toml=dumps(cfg))
    w.close("finished")
    with pytest.raises(ValueError, match="no weights") as e:
        probe.route_text(w.run_dir, "hello")
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="not found"):
        probe.route_text(tmp_path / "nope", "hello")
    with pytest.raises(ValueError, match="member 3"):
        probe.route_text(trained.run_dir, "hello", member=3)
    with pytest.raises(ValueError, match="not found"):
        probe.route_text(trained.run_dir, "hello", checkpoint="checkpoint-0000099.pt")
    assert probe.list_checkpoints(tmp_path / "nope") == []


def test_long_text_is_cut_at_a_character_boundary():
    toks = probe.encode_probe_text("é" * 10, max_tokens=7)
    assert toks.size == 6 and toks.tobytes().decode() == "ééé"
