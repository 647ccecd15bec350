"""The measured memory split (engine/footprint.py) against independent references:
parameter, gradient and AdamW state sizes from the parameter count, and activations
from a walk of the autograd graph's saved tensors (not through the hooks the probe
uses)."""
from __future__ import annotations

import pytest
import torch

from moe_studio.engine.expert_kernels import expert_kernel_setting, set_expert_kernel
from moe_studio.engine.footprint import FootprintProbe
from moe_studio.engine.model import MoEGPT
from moe_studio.engine.params import count_params
from moe_studio.engine.precision_memory import format_table, measure_modes
from moe_studio.engine.trainer import Trainer
from moe_studio.store.reader import RunReader

from tiny import tiny_config


def _graph_saved_bytes(roots, exclude: set[int]) -> tuple[int, int]:
    """Bytes of the distinct storages the graphs under ``roots`` keep for the backward,
    read from each node's ``_saved_*`` attributes and custom functions' saved_tensors:
    (tensors of one or more dimensions, 0-d tensors). A Python number saved by an op
    (``x * 0.5``) reads back as a fresh 0-d tensor that autograd never packed, so those
    are counted apart."""
    seen: set[int] = set()
    total = scalars = 0
    stack, visited = list(roots), set()

    def add(t):
        nonlocal total, scalars
        if isinstance(t, torch.Tensor) and t.layout == torch.strided:
            st = t.untyped_storage()
            if st.data_ptr() and st.data_ptr() not in seen and st.data_ptr() not in exclude:
                seen.add(st.data_ptr())
                if t.dim() == 0:
                    scalars += st.nbytes()
                else:
                    total += st.nbytes()

    while stack:
        node = stack.pop()
        if node is None or id(node) in visited:
            continue
        visited.add(id(node))
        names = [n for n in dir(node) if n.startswith("_saved_")]
        if hasattr(node, "saved_tensors") and not names:
            names = ["saved_tensors"]
        for n in names:
            try:
                v = getattr(node, n)
            except RuntimeError:
                continue
            for t in (v if isinstance(v, (tuple, list)) else (v,)):
                add(t)
        stack.extend(nxt for nxt, _ in node.next_functions)
    return total, scalars


@pytest.mark.parametrize("moe_layers", ["none", "all"])
def test_activations_match_graph_walk(moe_layers):
    cfg = tiny_config(model__moe_layers=moe_layers)
    torch.manual_seed(0)
    model = MoEGPT(cfg.model, cfg.moe, context=cfg.data.context)
    x = torch.randint(0, 256, (4, cfg.data.context))
    probe = FootprintProbe([model], [], torch.device("cpu"))
    was = expert_kernel_setting()
    set_expert_kernel("loop")
    try:
        probe.begin()
        _, loss = model(x, x)
        fp = probe.end()
    finally:
        probe.close()
        set_expert_kernel(was)
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    # the routers' balancing and z-losses hang off their own graphs
    roots = [loss.grad_fn] + [t.grad_fn for b in model.moe_blocks.values()
                              for t in (b.aux_loss, b.z_loss)]
    expected, scalars = _graph_saved_bytes(roots, params)
    assert expected > 0
    assert expected <= fp["activations"] <= expected + scalars
    # nothing is released before the backward: the peak is everything saved
    assert sum(fp["activations_by_dtype"].values()) == fp["activations"]


def test_trainer_split_fp32(tmp_path):
    cfg = tiny_config(train__steps=2, train__eval_every=100)
    tr = Trainer(cfg, tmp_path)
    while not tr.done:
        tr.step()
    tr.close(checkpoint=False)
    fp = tr.footprint
    n = count_params(cfg).total
    n_tensors = len(list(tr.models[0].parameters()))
    assert fp["params"] == 4 * n
    assert fp["grads"] == 4 * n            # every parameter gets a float32 gradient
    # AdamW: exp_avg and exp_avg_sq per parameter, plus a scalar step counter each
    assert 8 * n <= fp["optimizer"] <= 8 * n + 8 * n_tensors
    assert fp["activations"] > 0 and fp["step"] == 2 and fp["peak_allocated"] is None
    assert fp["total"] == fp["params"] + fp["grads"] + fp["optimizer"] + fp["activations"]
    r = RunReader(tr.run_dir)
    assert r.meta["memory_footprint"]["params"] == fp["params"]
    ev = r.events(["note"])
    assert any("memory of one step" in m for m in ev["message"])
    r.close()


def test_precision_modes_side_by_side():
    cfg = tiny_config()
    res = measure_modes(cfg, ["fp32", "bf16"])
    assert res["fp32"]["params"] == res["bf16"]["params"]   # master weights stay float32
    assert res["bf16"]["activations_by_dtype"].get("bfloat16", 0) > 0
    assert res["fp32"]["activations_by_dtype"].get("bfloat16", 0) == 0
    text = format_table(res)
    assert "fp32" in text.splitlines()[0] and "bf16" in text.splitlines()[0]
    assert "activations" in text and "method:" in text


def test_memory_cli_refuses_unknown_mode(capsys):
    from moe_studio.cli import main
    assert main(["memory", "--modes", "fp32,fp8"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "fp8" in err and "--modes" in err
