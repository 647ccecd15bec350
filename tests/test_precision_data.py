"""The Precision view's data reader (Qt-free: tests/test_views_data.py imports every
reader alone) reads a run, and a live run's polls, into exactly what was written."""
from __future__ import annotations


import numpy as np

from moe_studio.store import RunWriter, open_run


MODS = ["blocks.0.attn", "blocks.0.moe"]
TENSOR_SHAPES = {"precision/absmax": (2, 3), "precision/min_nonzero": (2, 3),
                 "precision/counts": (2, 3), "precision/exp_hist": (2, 3, 5),
                 "precision/fractions": (2, 3, 4)}


def _record(w: RunWriter, step: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    arrays = {name: rng.random(shape).astype(np.float32) for name, shape in TENSOR_SHAPES.items()}
    for name, a in arrays.items():
        w.add_tensor(step, name, a)
    return arrays


def test_reads_what_was_written_and_follows(tmp_path):
    from moe_studio.gui.views.precision_data import PrecisionData

    rng = np.random.default_rng(3)
    w = RunWriter.create(tmp_path, name="prec", config={"precision": {"mode": "fp16", "headroom": True}},
                         config_toml="", commit_interval=0.01)
    w.set_meta(precision_modules=MODS, precision_kinds=["act", "grad", "weight"],
               precision_formats=["fp16", "bf16"], precision_format_table={"fp16": {"max": 65504.0}},
               precision_log2_edges=[-24, -14, 0, 8, 16, 17])
    written = {s: _record(w, s, rng) for s in (1, 3)}
    w.add_scalars(1, {"precision/loss_scale": 65536.0, "precision/skipped": 0.0})
    w.add_scalars(2, {"precision/loss_scale": 32768.0, "precision/skipped": 1.0})
    w.add_event(2, "loss_scale_backoff", "scale halved", {"from": 65536.0, "to": 32768.0}, member=0)
    w.flush()
    try:
        with open_run(w.run_dir) as r:
            d = PrecisionData()
            d.load(r, member=0)
            assert (d.mode, d.headroom_on) == ("fp16", True)
            assert d.modules == MODS and d.formats == ["fp16", "bf16"]
            assert d.edges.tolist() == [-24, -14, 0, 8, 16, 17]
            assert d.steps.tolist() == [1, 3]
            for name in TENSOR_SHAPES:
                np.testing.assert_array_equal(d.t[name], np.stack([written[1][name], written[3][name]]))
            assert d.scale[0].tolist() == [1, 2] and d.scale[1].tolist() == [65536.0, 32768.0]
            assert d.skipped.tolist() == [2]
            assert [(e["step"], e["kind"], e["data"]["to"]) for e in d.events] == \
                [(2, "loss_scale_backoff", 32768.0)]
            assert d.has_data() and d.step_index(2) in (0, 1) and d.step_index(100) == 1
            assert d.rows(None) == [0, 1] and d.rows("blocks.0.moe") == [1] and d.rows("nope") == [0, 1]

            # a live run: what the next poll brings is appended, and only that
            f = r.follower(from_start=False)
            v0 = d.version
            written[5] = _record(w, 5, rng)
            w.add_scalars(5, {"precision/loss_scale": 32768.0, "precision/skipped": 1.0})
            w.flush()
            changed, new_meta = d.ingest(r, f.poll(), member=0)
            assert changed and not new_meta and d.version > v0
            assert d.steps.tolist() == [1, 3, 5] and d.skipped.tolist() == [2, 5]
            np.testing.assert_array_equal(d.t["precision/absmax"][-1], written[5]["precision/absmax"])
            assert d.ingest(r, f.poll(), member=0) == (False, False)   # nothing new
    finally:
        w.close("finished")
    d.reset()
    assert not d.has_data() and d.modules == [] and d.steps.size == 0


def test_skipped_steps_sit_at_the_scale_that_failed():
    """A skipped step is marked at the scale in force when it failed: the last scale
    recorded before it; at or before the first record, twice the first (that record
    already holds the halved scale)."""
    from moe_studio.gui.views.precision_data import PrecisionData

    d = PrecisionData()
    d.scale = (np.array([0, 10, 20, 30]), np.array([64.0, 32.0, 32.0, 16.0]))
    d.skipped = np.array([0, 10, 25, 30])
    x, y = d.skipped_marks()
    assert x.tolist() == [0.0, 10.0, 25.0, 30.0] and y.tolist() == [128.0, 64.0, 32.0, 32.0]
