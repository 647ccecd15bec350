"""engine.recorder: step results become the records of docs/CONTRACTS.md. Driven with a
real MoE model's forward pass and a writer that keeps what it is given, each record
checked against a value computed here another way."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from moe_studio.engine.model import MoEGPT
from moe_studio.engine.recorder import HIST_BINS, Recorder
from tiny import tiny_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class KeepingWriter:
    """The RunWriter calls the recorder makes, kept as (kind, step, name or values, member)."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def add_scalars(self, step, values, member=0):
        self.calls.append(("scalars", step, dict(values), member))

    def add_tensor(self, step, name, array, member=0):
        self.calls.append(("tensor", step, name, member, np.array(array)))

    def add_histogram(self, step, name, edges, counts, member=0):
        self.calls.append(("histogram", step, name, member, np.array(edges), np.array(counts)))

    def add_event(self, step, kind, message, data=None, member=0):
        self.calls.append(("event", step, kind, member, message, dict(data or {})))

    def scalars(self, member: int) -> dict:
        out: dict = {}
        for c in self.calls:
            if c[0] == "scalars" and c[3] == member:
                out.update(c[2])
        return out


def _model_after_forward(cfg):
    torch.manual_seed(0)
    model = MoEGPT(cfg.model, cfg.moe, context=cfg.data.context)
    x = torch.randint(0, 256, (cfg.data.batch_size, cfg.data.context))
    with torch.no_grad():
        logits, loss = model(x, x)
    return model, loss


def test_a_step_becomes_loss_and_balance_records():
    cfg = tiny_config(moe__capacity_factor=1.0)
    model, loss = _model_after_forward(cfg)
    w = KeepingWriter()
    rec = Recorder(w, cfg, [0, 1], [None], torch.device("cpu"))
    aux, z = model.aux_loss(), model.z_loss()
    rec.member_step(3, 0, model, loss, aux, z, loss + 0.01 * aux, torch.tensor(2.5))
    assert w.calls == []                        # kept on the device until a flush
    rec.flush(3, loss_member=lambda step: 0)

    got = w.scalars(member=0)
    assert got["train/loss"] == pytest.approx(float(loss))
    assert got["train/total_loss"] == pytest.approx(float(loss + 0.01 * aux))
    assert got["train/grad_norm"] == 2.5
    assert rec.last_loss == pytest.approx(float(loss))
    tpe = {c[2]: c[4] for c in w.calls if c[0] == "tensor"}["moe/tokens_per_expert"]
    dpe = {c[2]: c[4] for c in w.calls if c[0] == "tensor"}["moe/dropped_per_expert"]
    assert tpe.shape == (2, 4) and tpe.sum() == 2 * cfg.data.batch_size * cfg.data.context * 2
    assert dpe.sum() > 0                        # capacity 1.0 dropped some: a real fraction
    for j, blk in enumerate([0, 1]):
        loads = [float(v) for v in tpe[j]]
        mean = sum(loads) / len(loads)
        std = math.sqrt(sum((v - mean) ** 2 for v in loads) / len(loads))
        assert got[f"moe/L{blk}/load_cv"] == pytest.approx(std / mean)
        assert got[f"moe/L{blk}/load_max_over_mean"] == pytest.approx(max(loads) / mean)
        assert got[f"moe/L{blk}/dropped_frac"] == pytest.approx(float(dpe[j].sum()) / sum(loads))
        assert got[f"moe/L{blk}/top1_prob"] == pytest.approx(
            float(model.moe_blocks[blk].last.top1_prob))


def test_the_member_in_training_sets_the_loss_a_caller_sees():
    cfg = tiny_config(ensemble__members=2, ensemble__method="snapshot")
    model, loss = _model_after_forward(cfg)
    rec = Recorder(KeepingWriter(), cfg, [0, 1], [None, None], torch.device("cpu"))
    rec.member_step(1, 0, model, loss, 0.0, 0.0, loss, 1.0)
    rec.member_step(1, 1, model, loss * 2, 0.0, 0.0, loss * 2, 1.0)
    rec.flush(1, loss_member=lambda step: 1)
    assert rec.last_loss == pytest.approx(2 * float(loss))


def test_a_loss_scale_fall_is_a_skipped_step_with_its_culprit():
    cfg = tiny_config(precision__mode="fp16")
    w = KeepingWriter()
    rec = Recorder(w, cfg, [0, 1], [None], torch.device("cpu"))
    rec.loss_scale(7, 0, 65536.0, 65536.0, None)
    rec.loss_scale(8, 0, 65536.0, 32768.0, {"module": "blocks.1.ffn"})
    events = [c for c in w.calls if c[0] == "event"]
    assert [(e[1], e[2]) for e in events] == [(8, "loss_scale_backoff")]
    assert events[0][5] == {"from": 65536.0, "to": 32768.0, "module": "blocks.1.ffn"}
    assert "blocks.1.ffn" in events[0][4]
    scal = [(c[1], c[2]) for c in w.calls if c[0] == "scalars"]
    assert scal == [(7, {"precision/loss_scale": 65536.0}),
                    (8, {"precision/skipped": 1.0}), (8, {"precision/loss_scale": 32768.0})]


def test_router_histograms_count_every_probability():
    cfg = tiny_config()
    model, _ = _model_after_forward(cfg)
    w = KeepingWriter()
    Recorder(w, cfg, [0, 1], [None], torch.device("cpu")).router_histograms(1, 0, model)
    hists = {c[2]: c for c in w.calls if c[0] == "histogram"}
    assert sorted(hists) == ["router_probs/L0", "router_probs/L1"]
    for i in (0, 1):
        probs = model.moe_blocks[i].last.probs.detach().numpy().ravel()
        edges, counts = hists[f"router_probs/L{i}"][4:6]
        assert len(edges) == HIST_BINS + 1 and counts.sum() == probs.size
        ref = np.histogram(probs, bins=HIST_BINS, range=(0.0, 1.0))[0]
        assert np.abs(counts - ref).max() <= 2        # bin edges rounded differently at most


def test_a_nonfinite_loss_is_an_event_and_stops_when_asked():
    cfg = tiny_config(precision__stop_on_nan=True)
    model, loss = _model_after_forward(cfg)
    w = KeepingWriter()
    rec = Recorder(w, cfg, [0, 1], [None], torch.device("cpu"))
    rec.member_step(2, 0, model, loss * float("nan"), 0.0, 0.0, loss, 1.0)
    with pytest.raises(FloatingPointError, match="stop_on_nan"):
        rec.flush(2, loss_member=lambda step: 0)
    assert math.isnan(w.scalars(member=0)["train/loss"])     # recorded before stopping
    assert [c[2] for c in w.calls if c[0] == "event"] == ["nonfinite"]
