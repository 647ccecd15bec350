"""``moe-studio export RUN --format safetensors``: the run's weights, readable on their own."""
from __future__ import annotations

import torch

from moe_studio.cli import main
from moe_studio.engine.probe import load_model
from moe_studio.paths import sample_runs_dir


def test_export_weights_of_a_sample_by_name_round_trips(tmp_path, capsys):
    out = tmp_path / "w"
    assert main(["export", "moe-top2", "--format", "safetensors", "--out", str(out)]) == 0
    std = capsys.readouterr()
    assert std.out.split() == [str(out / "weights.safetensors"), str(out / "config.toml")]
    assert "written" in std.err
    exported, cfg, ck = load_model(out)          # the folder alone is enough to rebuild the model
    original, _, ck0 = load_model(sample_runs_dir() / "moe-top2")
    assert ck.step == ck0.step == 1500
    a, b = exported.state_dict(), original.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_a_run_without_weights_says_so(tmp_path, capsys):
    assert main(["export", "dense-baseline", "--format", "safetensors", "--out", str(tmp_path / "w")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "kept no weights" in err
    assert not (tmp_path / "w").exists()


def test_the_apps_engine_process_export_says_why_it_failed(tmp_path):
    """The app's safetensors export (an engine process) fails with the command's own
    one-line reason, which its error box shows."""
    import pytest
    from moe_studio.gui.run.weights_export import export_weights_in_child, has_weights
    dense = sample_runs_dir() / "dense-baseline"
    assert not has_weights(dense) and has_weights(sample_runs_dir() / "moe-top2")
    with pytest.raises(RuntimeError) as e:
        export_weights_in_child(dense, tmp_path / "w")
    assert str(e.value).startswith(str(dense)) and "kept no weights" in str(e.value)
    assert "\n" not in str(e.value) and not (tmp_path / "w").exists()
