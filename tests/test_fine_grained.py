"""Several shared experts (DeepSeekMoE) against separate experts summed in the test,
old configs with the retired ``moe.shared_expert`` switch, and the fine-grained preset
at the default's active parameters, counted on the built models."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from moe_studio.config import ConfigError, loads, presets
from moe_studio.config.schema import MoEConfig
from moe_studio.engine.model import MoEGPT
from moe_studio.engine.moe_layer import MoEFeedForward
from moe_studio.engine.params import count_params

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def one_expert(x, up, down, act):
    u = x @ up
    if act == "swiglu":
        gate, lin = u.chunk(2, dim=-1)
        return (F.silu(gate) * lin) @ down
    return F.gelu(u) @ down


@pytest.mark.parametrize("act", ["gelu", "swiglu"])
def test_shared_experts_add_each_experts_output(act):
    torch.manual_seed(0)
    d, h, n = 8, 5, 3
    layer = MoEFeedForward(d, MoEConfig(n_experts=4, top_k=2, n_shared=n, d_expert=h, expert_act=act), 99)
    width = 2 * h if act == "swiglu" else h
    ups = [torch.randn(d, width) / 3 for _ in range(n)]
    downs = [torch.randn(h, d) / 3 for _ in range(n)]
    with torch.no_grad():   # the n experts written into the layer's one wide shared MLP
        if act == "swiglu":
            gates = [u[:, :h] for u in ups] + [u[:, h:] for u in ups]
            layer.shared.up_proj.weight.copy_(torch.cat(gates, dim=1).T)
        else:
            layer.shared.up_proj.weight.copy_(torch.cat(ups, dim=1).T)
        layer.shared.down_proj.weight.copy_(torch.cat(downs, dim=0).T)
    x = torch.randn(2, 6, d)
    routed_only = MoEFeedForward(d, MoEConfig(n_experts=4, top_k=2, d_expert=h, expert_act=act), 99)
    routed_only.load_state_dict({k: v for k, v in layer.state_dict().items() if not k.startswith("shared.")})
    expect = routed_only(x) + sum(one_expert(x, u, w, act) for u, w in zip(ups, downs))
    torch.testing.assert_close(layer(x), expect, atol=1e-5, rtol=1e-5)


def test_old_shared_expert_switch_still_loads():
    assert loads("[moe]\nshared_expert = true\n").moe.n_shared == 1
    assert loads("[moe]\nshared_expert = false\n").moe.n_shared == 0
    assert loads("[moe]\nshared_expert = true\nn_shared = 3\n").moe.n_shared == 3
    with pytest.raises(ConfigError, match="moe.shared_expert must be true or false"):
        loads('[moe]\nshared_expert = "yes"\n')


def _active_counted_on_model(cfg) -> int:
    """Every parameter of the built model, less the routed experts a token skips."""
    model = MoEGPT(cfg.model, cfg.moe, cfg.data.context)
    n = sum(p.numel() for p in model.parameters())
    for ffn in model.moe_blocks.values():
        per_expert = ffn.w1[0].numel() + ffn.w2[0].numel()
        n -= (ffn.n_experts - ffn.top_k) * per_expert
    return n


def test_fine_grained_preset_has_the_defaults_active_parameters():
    fg, base = presets.fine_grained(), presets.default()
    assert fg.moe.n_experts > base.moe.n_experts and fg.moe.n_shared >= 2
    assert fg.moe.d_expert != fg.model.d_ff
    torch.manual_seed(0)
    assert _active_counted_on_model(fg) == _active_counted_on_model(base)
    assert count_params(fg).active == count_params(base).active
