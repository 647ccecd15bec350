"""MoEGPT: parameter count = params.py, causality, dense = no MoE blocks, losses,
aux_free bias updates, determinism, and that a few steps of training learn."""
from __future__ import annotations

import math

import pytest
import torch

from moe_studio.config.schema import ExperimentConfig
from moe_studio.config.validate import parse_layer_set
from moe_studio.engine.model import MoEGPT
from moe_studio.engine.moe_layer import MoEFeedForward
from moe_studio.engine.params import count_params


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_cfg(**moe) -> ExperimentConfig:
    cfg = ExperimentConfig()
    cfg.model.n_layers, cfg.model.n_heads, cfg.model.d_model, cfg.model.d_ff = 2, 2, 16, 32
    cfg.data.context = 12
    cfg.moe.n_experts, cfg.moe.top_k = 4, 2
    model_keys = {"moe_layers", "n_layers", "dropout", "d_ff"}
    for key, value in moe.items():
        setattr(cfg.model if key in model_keys else cfg.moe, key, value)
    return cfg


def build(cfg: ExperimentConfig, seed: int = 0) -> MoEGPT:
    torch.manual_seed(seed)
    return MoEGPT(cfg.model, cfg.moe, cfg.data.context)


@pytest.mark.parametrize("options", [
    {},
    {"router": "noisy_topk"},
    {"router": "soft"},
    {"router": "aux_free"},
    {"top_k": 1, "n_shared": 1},
    {"d_expert": 24, "n_shared": 3, "router": "noisy_topk"},
    {"moe_layers": "every_other", "n_layers": 3},
    {"moe_layers": "0", "capacity_factor": 1.25, "jitter": 0.01},
    {"moe_layers": "none"},
])
def test_param_count_matches_params_py(options):
    cfg = tiny_cfg(**options)
    model = build(cfg)
    assert sum(p.numel() for p in model.parameters()) == count_params(cfg).total


def test_forward_shapes_and_loss():
    cfg = tiny_cfg()
    model = build(cfg)
    idx = torch.randint(0, 256, (3, 12))
    logits, loss = model(idx)
    assert logits.shape == (3, 12, 256) and loss is None
    logits, loss = model(idx, idx)
    assert loss.shape == () and math.isclose(loss.item(), math.log(256), rel_tol=0.1)
    with pytest.raises(ValueError, match="context"):
        model(torch.zeros(1, 13, dtype=torch.long))


def test_tied_embedding_and_init():
    cfg = tiny_cfg(n_layers=4)
    model = build(cfg)
    assert model.tok_emb.weight.std().item() == pytest.approx(0.02, rel=0.1)
    resid = 0.02 / math.sqrt(2 * 4)
    assert model.blocks[0].attn.out_proj.weight.std().item() == pytest.approx(resid, rel=0.1)
    assert model.blocks[0].ffn.w2.std().item() == pytest.approx(resid, rel=0.1)
    assert model.blocks[0].ffn.w1.std().item() == pytest.approx(0.02, rel=0.1)
    # the LM head is the token embedding: its gradient comes from both uses
    idx = torch.randint(0, 256, (2, 12))
    _, loss = model(idx, idx)
    loss.backward()
    assert model.tok_emb.weight.grad is not None


@pytest.mark.parametrize("layers", ["all", "none", "every_other"])
def test_causal(layers):
    cfg = tiny_cfg(moe_layers=layers, n_layers=3, router="topk")
    model = build(cfg).eval()
    idx = torch.randint(0, 256, (2, 12))
    changed = idx.clone()
    changed[:, 7:] = (changed[:, 7:] + 1) % 256
    a, _ = model(idx)
    b, _ = model(changed)
    torch.testing.assert_close(a[:, :7], b[:, :7])
    assert not torch.allclose(a[:, 7:], b[:, 7:])


def test_dense_model_has_no_moe_blocks():
    model = build(tiny_cfg(moe_layers="none"))
    assert model.moe_blocks == {}
    assert not any(isinstance(m, MoEFeedForward) for m in model.modules())
    model(torch.randint(0, 256, (1, 12)))
    for loss in (model.aux_loss(), model.z_loss()):
        assert loss.shape == () and loss.item() == 0.0
    assert model.router_biases() is None
    model.update_router_biases()                     # a no-op, not an error


def test_moe_blocks_follow_layer_set_and_losses_sum():
    cfg = tiny_cfg(moe_layers="every_other", n_layers=4)
    model = build(cfg)
    assert list(model.moe_blocks) == parse_layer_set("every_other", 4) == [1, 3]
    model(torch.randint(0, 256, (2, 12)))
    blocks = model.moe_blocks.values()
    torch.testing.assert_close(model.aux_loss(), sum(m.aux_loss for m in blocks))
    torch.testing.assert_close(model.z_loss(), sum(m.z_loss for m in blocks))
    assert model.aux_loss().requires_grad and model.z_loss().requires_grad
    model.set_collect_stats(False)
    model(torch.randint(0, 256, (2, 12)))
    assert all(m.last is None for m in blocks)


def test_update_router_biases_for_aux_free():
    cfg = tiny_cfg(router="aux_free", bias_update_rate=0.01)
    model = build(cfg)
    model(torch.randint(0, 256, (4, 12)))
    loads = [m.tokens_per_expert.clone() for m in model.moe_blocks.values()]
    model.update_router_biases()
    biases = model.router_biases()
    assert biases.shape == (2, 4)
    for load, bias in zip(loads, biases):
        torch.testing.assert_close(bias, 0.01 * torch.sign(load.mean() - load))


def _train(cfg: ExperimentConfig, steps: int, seed: int = 0, data: torch.Tensor | None = None):
    model = build(cfg, seed)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(steps):
        if data is None:
            idx = torch.randint(0, 256, (4, 13), generator=g)
        else:
            starts = torch.randint(0, len(data) - 13, (8,), generator=g)
            idx = torch.stack([data[s:s + 13] for s in starts])
        _, loss = model(idx[:, :-1], idx[:, 1:])
        total = loss + cfg.moe.aux_loss_coef * model.aux_loss() + cfg.moe.z_loss_coef * model.z_loss()
        opt.zero_grad()
        total.backward()
        opt.step()
        model.update_router_biases()
        losses.append(loss.item())
    return model, losses


@pytest.mark.parametrize("router", ["noisy_topk", "aux_free"])
def test_deterministic_under_manual_seed(router):
    cfg = tiny_cfg(router=router, jitter=0.05, dropout=0.1)
    m1, l1 = _train(cfg, 3)
    m2, l2 = _train(cfg, 3)
    assert l1 == l2
    for (n, a), b in zip(m1.state_dict().items(), m2.state_dict().values()):
        assert torch.equal(a, b), n


@pytest.mark.parametrize("router", ["topk", "soft"])
def test_training_reduces_loss_on_repeating_text(router):
    cfg = tiny_cfg(router=router)
    text = torch.tensor(list(b"the cat sat on the mat. ") * 20, dtype=torch.long)
    _, losses = _train(cfg, 40, data=text)
    assert losses[-1] < 0.5 * losses[0], losses


def test_deepcopy_after_forward():
    # snapshot ensembles copy a model mid-training; the last forward's (non-leaf)
    # losses must not make that fail
    import copy

    model = build(tiny_cfg())
    model(torch.randint(0, 256, (2, 12)))
    clone = copy.deepcopy(model)
    assert all(m.aux_loss is None and m.last is None for m in clone.moe_blocks.values())
    for a, b in zip(model.state_dict().values(), clone.state_dict().values()):
        assert torch.equal(a, b)
    idx = torch.randint(0, 256, (2, 12))
    torch.testing.assert_close(clone.eval()(idx)[0], model.eval()(idx)[0])
