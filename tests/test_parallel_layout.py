"""The parallel section: validated alone and against the world size."""
from __future__ import annotations

import pytest

from moe_studio.config import ConfigError, ExperimentConfig, apply_overrides, problems
from moe_studio.engine.parallel.layout import resolve_layout


def cfg_with(*sets: str) -> ExperimentConfig:
    return apply_overrides(ExperimentConfig(), list(sets))


def messages(cfg) -> list[str]:
    return [str(e) for e in problems(cfg)]


def test_defaults_are_one_process():
    cfg = ExperimentConfig()
    assert problems(cfg) == []
    lay = resolve_layout(cfg, 1)
    assert (lay.world, lay.data, lay.expert) == (1, 1, 1)


def test_expert_must_divide_experts():
    assert "parallel.expert (3) must divide moe.n_experts (8)" in messages(cfg_with("parallel.expert=3"))


def test_expert_needs_moe_blocks_and_no_fp16():
    assert any("needs MoE blocks" in m for m in messages(cfg_with("parallel.expert=2",
                                                                  "model.moe_layers=none")))
    assert any("fp16" in m for m in messages(cfg_with("parallel.expert=2", "precision.mode=fp16")))


def test_data_must_be_auto_or_a_count():
    assert any(m.startswith("parallel.data ('two') must be 'auto'")
               for m in messages(cfg_with("parallel.data=two")))
    assert problems(cfg_with("parallel.data=2")) == []


def test_ensembles_stay_in_one_process():
    assert any("ensemble.members (2)" in m for m in messages(cfg_with("ensemble.members=2",
                                                                      "parallel.processes=2")))


@pytest.mark.parametrize("sets, world, want", [
    (("parallel.expert=2",), 4, (4, 2, 2)),
    ((), 3, (3, 3, 1)),
    (("parallel.data=2", "parallel.expert=2"), 4, (4, 2, 2)),
])
def test_layouts_that_fit(sets, world, want):
    lay = resolve_layout(cfg_with(*sets), world)
    assert (lay.world, lay.data, lay.expert) == want


@pytest.mark.parametrize("sets, world, msg", [
    (("parallel.expert=2",), 3, "parallel.expert (2) must divide the world size (3 ranks)"),
    (("parallel.data=3",), 2, "parallel.data (3) x parallel.expert (1) must equal the world size (2 ranks)"),
    (("ensemble.members=2",), 2, "ensemble.members (2) cannot be spread over 2 ranks yet"),
])
def test_layouts_that_do_not_fit(sets, world, msg):
    with pytest.raises(ConfigError, match=msg.replace("(", r"\(").replace(")", r"\)")):
        resolve_layout(cfg_with(*sets), world)


def test_groups_cover_every_rank_once():
    lay = resolve_layout(cfg_with("parallel.expert=2"), 6)
    seen_e = sorted(r for g in {tuple(lay.expert_group(r)) for r in range(6)} for r in g)
    seen_d = sorted(r for g in {tuple(lay.expert_data_group(r)) for r in range(6)} for r in g)
    assert seen_e == seen_d == list(range(6))
    assert lay.expert_group(3) == [2, 3] and lay.expert_data_group(3) == [1, 3, 5]


def test_cli_refuses_a_process_count_below_one(tmp_path):
    import subprocess
    import sys
    p = subprocess.run([sys.executable, "-m", "moe_studio", "train", "--nproc", "0", "--out",
                        str(tmp_path)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert p.returncode == 2
    assert "--nproc must be at least 1 (got 0)" in p.stderr
    assert not list(tmp_path.glob("*/run.sqlite"))
