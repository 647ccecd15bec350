"""Today's MoE layouts against the Hugging Face implementations with copied weights:
Mixtral's SwiGLU experts under softmax top-2, and DeepSeek-V3's sigmoid gating with a
selection bias and two shared experts (one expert group, scaling factor 1)."""
from __future__ import annotations

import pytest
import torch

from moe_studio.config.schema import MoEConfig
from moe_studio.engine import expert_kernels as kernels
from moe_studio.engine.moe_layer import MoEFeedForward

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.usefixtures("one_torch_thread", "fresh_expert_kernel")

D, H, E = 16, 8, 6


def _copy_experts(ours: MoEFeedForward, hf_experts) -> None:
    # HF keeps [E, 2h, d] (gate rows, then up rows) and [E, d, h]: ours is the transpose.
    with torch.no_grad():
        ours.w1.copy_(hf_experts.gate_up_proj.transpose(1, 2))
        ours.w2.copy_(hf_experts.down_proj.transpose(1, 2))


def _randomise(module: torch.nn.Module) -> None:
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)


def _same(ours, theirs, x):
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = ours(xa), theirs(xb)
    torch.testing.assert_close(ya, yb, atol=1e-5, rtol=1e-5)
    g = torch.linspace(-1, 1, ya.numel()).view_as(ya)
    ya.backward(g)
    yb.backward(g)
    torch.testing.assert_close(xa.grad, xb.grad, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kernel", ["loop", "grouped"])
def test_swiglu_top2_equals_hf_mixtral_block(kernel):
    from transformers.models.mixtral.configuration_mixtral import MixtralConfig
    from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock

    kernels.set_expert_kernel(kernel)
    hf = MixtralSparseMoeBlock(MixtralConfig(hidden_size=D, intermediate_size=H, num_local_experts=E,
                                             num_experts_per_tok=2, hidden_act="silu"))
    _randomise(hf)
    ours = MoEFeedForward(D, MoEConfig(n_experts=E, top_k=2, d_expert=H, expert_act="swiglu"), 99)
    with torch.no_grad():
        ours.router.gate.weight.copy_(hf.gate.weight)
    _copy_experts(ours, hf.experts)
    _same(ours, hf, torch.randn(2, 7, D, generator=torch.Generator().manual_seed(1)))


def test_sigmoid_router_with_shared_experts_equals_hf_deepseek_v3():
    from transformers.models.deepseek_v3.configuration_deepseek_v3 import DeepseekV3Config
    from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3MoE

    cfg = DeepseekV3Config(hidden_size=D, moe_intermediate_size=H, n_routed_experts=E,
                           num_experts_per_tok=2, n_shared_experts=2, n_group=1, topk_group=1,
                           routed_scaling_factor=1.0, norm_topk_prob=True, hidden_act="silu")
    hf = DeepseekV3MoE(cfg)
    _randomise(hf)
    bias = torch.tensor([0.2, -0.1, 0.0, 0.3, -0.2, 0.1])
    hf.gate.e_score_correction_bias.copy_(bias)
    ours = MoEFeedForward(D, MoEConfig(n_experts=E, top_k=2, d_expert=H, expert_act="swiglu",
                                       router="sigmoid", n_shared=2), 99)
    with torch.no_grad():
        ours.router.gate.weight.copy_(hf.gate.weight)
        ours.router.bias.copy_(bias)
        s = hf.shared_experts
        ours.shared.up_proj.weight.copy_(torch.cat([s.gate_proj.weight, s.up_proj.weight]))
        ours.shared.down_proj.weight.copy_(s.down_proj.weight)
    _copy_experts(ours, hf.experts)
    _same(ours, hf, torch.randn(2, 7, D, generator=torch.Generator().manual_seed(2)))
