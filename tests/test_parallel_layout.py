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


def test_expert_needs_moe_blocks_and_takes_fp16():
    assert any("needs MoE blocks" in m for m in messages(cfg_with("parallel.expert=2",
                                                                  "model.moe_layers=none")))
    # the ranks' loss scalers agree on skipped steps (tests/test_parallel_fp16.py)
    assert problems(cfg_with("parallel.expert=2", "precision.mode=fp16")) == []


def test_data_must_be_auto_or_a_count():
    assert any(m.startswith("parallel.data ('two') must be 'auto'")
               for m in messages(cfg_with("parallel.data=two")))
    assert problems(cfg_with("parallel.data=2")) == []


def test_independent_members_spread_over_processes():
    for method in ("seeds", "bagging"):
        assert problems(cfg_with("ensemble.members=4", f"ensemble.method={method}",
                                 "parallel.processes=2")) == []
    assert any(m.startswith("ensemble.method snapshot cannot be spread over parallel.processes (2): "
                            "its members train one after another")
               for m in messages(cfg_with("ensemble.members=2", "ensemble.method=snapshot",
                                          "parallel.processes=2")))
    assert any("ensemble.members (3) must be a multiple of parallel.processes (2)" in m
               for m in messages(cfg_with("ensemble.members=3", "parallel.processes=2")))


def test_a_spread_ensemble_gives_each_rank_a_block_of_members():
    lay = resolve_layout(cfg_with("ensemble.members=4"), 2)
    assert (lay.world, lay.data, lay.expert, lay.member) == (2, 1, 1, 2)
    assert [list(lay.member_ids(r)) for r in (0, 1)] == [[0, 1], [2, 3]]
    assert lay.describe() == "2 ranks = members 4 spread 2 per rank (whole batch each)"


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
    (("ensemble.members=2",), 4, "ensemble.members (2) must be a multiple of the world size (4 ranks)"),
    (("ensemble.members=2", "ensemble.method=boosting"), 2,
     "ensemble.method boosting cannot be spread over the world size (2 ranks)"),
    (("ensemble.members=2", "parallel.expert=2"), 2,
     "parallel.expert (2) with ensemble.members (2) over the world size (2 ranks)"),
    (("ensemble.members=2", "parallel.data=2"), 2, "parallel.data (2) with ensemble.members (2)"),
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
    assert "--nproc 0: parallel.processes (0) must be >= 1" in p.stderr
    assert not list(tmp_path.glob("*/run.sqlite"))
