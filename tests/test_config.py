"""Config schema, TOML round trip, validation messages, overrides, presets."""
import math

import pytest

from moe_studio.config import (PRESETS, ConfigError, ExperimentConfig, apply_overrides, default,
                               dumps, from_dict, load, loads, parse_layer_set, problems, save,
                               to_dict, validate)
from moe_studio.engine.schedule import lr_at


def test_default_and_presets_are_valid_and_distinct():
    assert problems(default()) == []
    seen = set()
    for name, fn in PRESETS.items():
        cfg = fn()
        assert problems(cfg) == [], name
        key = dumps(cfg)
        assert key not in seen, f"preset {name} duplicates another"
        seen.add(key)
    assert len(PRESETS) >= 6


def test_toml_round_trip_every_preset(tmp_path):
    for fn in PRESETS.values():
        cfg = fn()
        cfg.data.probe_text = 'quote " backslash \\ newline\n tab\t é'
        p = tmp_path / "c.toml"
        save(cfg, p)
        assert to_dict(load(p)) == to_dict(cfg)


def test_missing_keys_keep_defaults():
    cfg = loads("[moe]\ntop_k = 1\n")
    assert cfg.moe.top_k == 1
    assert cfg.moe.n_experts == ExperimentConfig().moe.n_experts


@pytest.mark.parametrize("text, needle", [
    ("[moe]\ntop_k = 9\nn_experts = 2\n", "moe.top_k (9) must be <= moe.n_experts (2)"),
    ("[model]\nd_model = 100\nn_heads = 3\n", "model.d_model (100) must be divisible by model.n_heads (3)"),
    ("[moe]\nrouter = 'magic'\n", "moe.router ('magic') must be one of: topk, noisy_topk, soft, aux_free"),
    ("[train]\nlr = -1.0\n", "train.lr (-1) must be >= 0"),
    ("[data]\ncontext = 4\n", "data.context (4) must be >= 8"),
    ("[model]\nmoe_layers = '7'\n", "model.moe_layers: block 7 does not exist"),
    ("[train]\nsteps = 10\nwarmup_steps = 20\n", "train.warmup_steps (20) must be <= train.steps (10)"),
    ("[moe]\nrouter = 'soft'\ncapacity_factor = 1.0\n", "capacity_factor must be 0 with the soft router"),
])
def test_invalid_values_name_the_field(text, needle):
    cfg = loads(text)
    errs = problems(cfg)
    assert errs, text
    assert any(needle in e.message for e in errs), [e.message for e in errs]
    with pytest.raises(ConfigError):
        validate(cfg)


def test_type_errors_and_unknown_keys():
    with pytest.raises(ConfigError, match="moe.top_k must be a whole number"):
        loads("[moe]\ntop_k = 'two'\n")
    with pytest.raises(ConfigError, match="unknown key 'moe.topk'"):
        loads("[moe]\ntopk = 2\n")
    with pytest.raises(ConfigError, match="unknown config section 'optimizer'"):
        loads("[optimizer]\nlr = 1\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        loads("[moe\n")


@pytest.mark.parametrize("method", ["snapshot", "boosting"])
def test_sequential_ensembles_need_a_step_per_member(method):
    text = f"[ensemble]\nmembers = 4\nmethod = '{method}'\n[train]\nsteps = 3\nwarmup_steps = 0\n"
    errs = problems(loads(text))
    assert [e.path for e in errs] == ["ensemble.members"], [e.message for e in errs]
    assert f"{method} trains its 4 members one after another: train.steps (3) must be >= " \
           "ensemble.members (4)" in errs[0].message
    # parallel methods train every member every step, and enough steps make it valid
    assert problems(loads(text.replace(method, "bagging"))) == []
    assert problems(loads(text.replace("steps = 3", "steps = 4"))) == []


def test_cli_presets_come_from_the_preset_table():
    from types import SimpleNamespace

    from moe_studio.cli import _load_config
    from moe_studio.config import presets

    def load_preset(name):
        return _load_config(SimpleNamespace(preset=name, config=None, set=[], steps=None))

    for title, fn in PRESETS.items():     # every preset by function name, dashes allowed, and title
        assert dumps(load_preset(fn.__name__.replace("_", "-"))) == dumps(fn())
        assert dumps(load_preset(title)) == dumps(fn())
    assert load_preset("default").name == presets.default().name
    with pytest.raises(ConfigError, match="moe_vs_ensemble_dense"):
        load_preset("nope")


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b"\xff\xfe[moe]")
    with pytest.raises(ConfigError, match="bad.toml"):
        load(bad)


def test_overrides():
    cfg = default()
    apply_overrides(cfg, ["moe.top_k=1", "train.lr=1e-3", "moe.renormalize=false", "name=x"])
    assert cfg.moe.top_k == 1 and math.isclose(cfg.train.lr, 1e-3)
    assert cfg.moe.renormalize is False and cfg.name == "x"
    with pytest.raises(ConfigError, match="expected section.key=value"):
        apply_overrides(cfg, ["moe.top_k"])
    with pytest.raises(ConfigError, match="unknown key 'moe.nope'"):
        apply_overrides(cfg, ["moe.nope=1"])


def test_layer_sets():
    assert parse_layer_set("all", 4) == [0, 1, 2, 3]
    assert parse_layer_set("none", 4) == []
    assert parse_layer_set("every_other", 5) == [1, 3]
    assert parse_layer_set("3, 1,1", 4) == [1, 3]
    assert from_dict({"model": {"moe_layers": [0, 2]}}).model.moe_layers == "0,2"


def test_lr_schedule_warmup_and_cosine():
    kw = dict(lr=1.0, min_lr=0.1, warmup_steps=10, total_steps=110)
    assert math.isclose(lr_at(0, **kw), 0.1)
    assert math.isclose(lr_at(9, **kw), 1.0)
    assert math.isclose(lr_at(10, **kw), 1.0)
    assert math.isclose(lr_at(109, **kw), 0.1)
    # halfway through the cosine: the midpoint of lr and min_lr
    mid = 10 + (110 - 1 - 10) / 2
    assert math.isclose(lr_at(int(mid), **kw), 0.55, abs_tol=0.02)
    vals = [lr_at(s, **kw) for s in range(10, 110)]
    assert all(a >= b for a, b in zip(vals, vals[1:]))


def test_lr_zero_is_refused_in_the_shared_validator():
    """lr = 0 trains nothing: the form and `moe-studio train` both refuse it (issue 13)."""
    cfg = loads("[train]\nlr = 0.0\nmin_lr = 0.0\n")
    assert [e.message for e in problems(cfg) if e.path == "train.lr"] == \
        ["train.lr (0) must be > 0: with no learning rate the weights never change"]
    with pytest.raises(ConfigError, match=r"train.lr \(0\) must be > 0"):
        validate(cfg)


def test_corpus_path_is_checked_on_disk(tmp_path):
    """A corpus that does not exist, or cannot be read, is a config problem found at
    once, not a failure seconds after Train (issue 13)."""
    def corpus_errors(spec):
        cfg = default()
        cfg.data.corpus = spec
        return [e.message for e in problems(cfg) if e.path == "data.corpus"]

    missing = tmp_path / "no-such-corpus.txt"
    assert corpus_errors(str(missing)) == [
        f"data.corpus: '{missing}' does not exist (give a text file, a folder of them, "
        f"or 'embedded')"]
    with pytest.raises(ConfigError, match="no-such-corpus.txt' does not exist"):
        validate(loads(f"[data]\ncorpus = '{missing}'\n"))
    ok = tmp_path / "text.txt"
    ok.write_text("some text\n")
    assert corpus_errors(str(ok)) == [] and corpus_errors(str(tmp_path)) == []
    assert corpus_errors("embedded") == [] and corpus_errors("  ") != []
    import os
    if os.geteuid() != 0:  # root reads everything
        ok.chmod(0)
        try:
            assert corpus_errors(str(ok)) == [f"data.corpus: '{ok}' cannot be read "
                                              f"(permission denied)"]
        finally:
            ok.chmod(0o644)
