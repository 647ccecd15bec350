"""Monitors at a rate: routing statistics every train.stats_every steps, and the
presets' rates."""
import tempfile

from moe_studio.config import presets
from moe_studio.engine.trainer import Trainer
from moe_studio.store import open_run
from tiny import tiny_config


def test_statistics_are_recorded_every_stats_every_steps_and_losses_every_step():
    cfg = tiny_config(train__steps=7, train__stats_every=3, train__snapshot_every=100,
                      train__eval_every=100, precision__headroom=False)
    with tempfile.TemporaryDirectory() as d:
        tr = Trainer(cfg, runs_dir=d)
        for _ in range(7):
            tr.step()
        tr.close("stopped", checkpoint=False)
        with open_run(tr.run_dir) as r:
            loss = r.scalars(["train/loss"], member=0)
            ent = r.scalars(["moe/L0/entropy"], member=0)
            tpe_steps = list(r.tensor_steps("moe/tokens_per_expert"))
    assert sorted(loss["step"]) == list(range(1, 8))
    # step 1 is a snapshot step (its histograms need statistics), 3 and 6 by the rate,
    # 7 the last step
    assert sorted(ent["step"]) == [1, 3, 6, 7]
    assert tpe_steps == [1, 3, 6, 7]


def test_presets_take_monitors_at_their_cheap_rates():
    for make in (presets.default, presets.dense_baseline, presets.switch_top1):
        c = make()
        assert c.train.stats_every == presets.PRESET_STATS_EVERY > 1
        assert c.precision.headroom_every >= presets.PRESET_HEADROOM_EVERY or \
            c.name == "fp16-overflow"
