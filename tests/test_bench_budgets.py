"""Benchmark budgets that can fail: paired-ratio confidence intervals and verdicts, the
kernel tuner's decision rule, and the engine benchmark's report."""
import numpy as np
import pytest
import torch

from moe_studio.bench._common import budget, ratio_ci, verdict_at_least, verdict_at_most
from moe_studio.engine import expert_kernels as kernels


def test_ratio_ci_brackets_the_median_of_paired_ratios():
    rng = np.random.default_rng(1)
    base = rng.uniform(0.09, 0.12, 40)
    slow = base * 1.05 * rng.uniform(0.99, 1.01, 40)
    est = ratio_ci(list(slow), list(base))
    assert est["median"] == pytest.approx(float(np.median(slow / base)))
    lo, hi = est["ci"]
    assert lo <= est["median"] <= hi and 1.03 < lo and hi < 1.07 and est["pairs"] == 40
    with pytest.raises(ValueError, match="paired"):
        ratio_ci([1.0], [1.0, 2.0])


def test_a_noisy_negative_overhead_is_unresolved_not_a_pass():
    rng = np.random.default_rng(2)
    off = rng.uniform(0.1, 0.1, 12)
    on = off * rng.uniform(0.75, 1.15, 12)       # noise far larger than any budget
    b = budget(ratio_ci(list(on), list(off)), 0.03, offset=-1.0)
    assert b["ci95"][0] < 0 < b["ci95"][1]
    assert b["verdict"] == "unresolved" and b["ok"] is False


def test_verdicts_pass_and_fail_on_the_whole_interval():
    assert verdict_at_most([0.01, 0.02], 0.03) == "ok"
    assert verdict_at_most([0.04, 0.09], 0.03) == "missed"
    assert verdict_at_most([0.02, 0.04], 0.03) == "unresolved"
    assert verdict_at_least([1.25, 1.3], 1.2) == "ok"
    assert verdict_at_least([0.9, 1.1], 1.2) == "missed"
    assert verdict_at_least([1.1, 1.3], 1.2) == "unresolved"
    clear_miss = budget({"median": 1.5, "ci": [1.45, 1.55], "pairs": 9}, 1.3)
    assert clear_miss["verdict"] == "missed" and not clear_miss["ok"]


@pytest.mark.parametrize("loop_s, grouped_s, expect", [
    (0.90, 1.0, "grouped"),   # within the margin: the grouped kernel is kept
    (0.70, 1.0, "loop"),      # clearly faster loop
    (1.20, 1.0, "grouped"),
])
def test_tuner_keeps_grouped_unless_the_loop_is_clearly_faster(monkeypatch, loop_s, grouped_s, expect):
    seen = {"loop": 0, "grouped": 0}

    def fake_time(fn, *args):
        name = "loop" if fn is kernels.mlp_loop else "grouped"
        seen[name] += 1
        # one wild outlier per kernel must not decide (medians are compared)
        scale = 5.0 if seen[name] == 3 else 1.0
        return (loop_s if name == "loop" else grouped_s) * scale

    monkeypatch.setattr(kernels, "_time_kernel", fake_time)
    tuner = kernels.KernelTuner("auto")
    xs, w1, w2 = torch.randn(6, 8), torch.randn(2, 8, 8), torch.randn(2, 8, 8)
    assert tuner.choose(xs, w1, w2, torch.tensor([3, 3])) == expect
    assert seen == {"loop": kernels.TUNE_ROUNDS, "grouped": kernels.TUNE_ROUNDS}


def test_kernels_run_names_what_ran_not_the_setting():
    xs, w1, w2 = torch.randn(6, 8), torch.randn(2, 8, 8), torch.randn(2, 8, 8)
    before = kernels.expert_kernel_setting()
    try:
        kernels.set_expert_kernel("loop")
        kernels.run_experts(xs, w1, w2, torch.tensor([3, 3]))
        ran = [r for r in kernels.kernels_run() if (r["n_experts"], r["d_model"]) == (2, 8)]
        assert ran and ran[-1]["kernel"] == "loop"
    finally:
        kernels.set_expert_kernel(before)


def test_engine_bench_quick_reports_judged_budgets():
    from moe_studio.bench.engine import run

    r = run(json_out=True, quick=True)
    assert set(r["step_ms"]) == {"plain_gpt", "dense", "moe_stats_on", "moe_stats_off"}
    assert r["expert_kernels_run"] and r["expert_kernels_run"][0]["kernel"] in ("loop", "grouped")
    assert len(r["budgets"]) == 3
    for b in r["budgets"].values():
        assert b["verdict"] in ("ok", "missed", "unresolved") and b["pairs"] == r["rounds"]
        assert b["ci95"][0] <= b["value"] <= b["ci95"][1]
