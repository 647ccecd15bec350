"""Checkpoints of a distributed run in the one-process format: rank 0 writes a file
whose models and optimizer states hold every expert (gathered from the ranks that
hold them), so it loads in one process (the Routing view, a resume on one machine)
and on any other world size, where each rank keeps its own experts' slice.

Replicated parameters are the same on every rank (DDP), so rank 0's copy is the
model's; only expert weights and their optimizer moments (exp_avg, exp_avg_sq) are
gathered, in rank order, which is expert order (engine/parallel/layout.py).
"""
from __future__ import annotations

import torch
import torch.distributed as dist

from .expert_parallel import gather_experts, local_experts
from .ranks import Ranks, expert_param_names


def _names_by_index(model: torch.nn.Module, opt: torch.optim.Optimizer) -> list[str]:
    """The parameter name of each index of ``opt.state_dict()['state']``."""
    names = {id(p): n for n, p in model.named_parameters()}
    return [names[id(p)] for g in opt.param_groups for p in g["params"]]


def _each_expert_tensor(model, model_sd: dict, opt, opt_sd: dict):
    """(container, key) of every expert tensor in a model and an optimizer state dict."""
    # In the same order on every rank: each yield is a collective's turn (a set's
    # order follows the per-process string hash seed and would pair unlike tensors).
    names = expert_param_names(model)
    experts = set(names)
    for name in names:
        yield model_sd, name
    for i, name in enumerate(_names_by_index(model, opt)):
        if name in experts and i in opt_sd["state"]:
            for k, v in opt_sd["state"][i].items():
                if torch.is_tensor(v) and v.dim() > 0:
                    yield opt_sd["state"][i], k


def consolidated(ranks: Ranks, model, opt) -> tuple[dict, dict]:
    """``(model state_dict, optimizer state_dict)`` with every expert (collective: every
    rank calls it; each gets the whole state)."""
    model_sd, opt_sd = model.state_dict(), opt.state_dict()
    if ranks.expert > 1:
        for box, key in list(_each_expert_tensor(model, model_sd, opt, opt_sd)):
            box[key] = gather_experts(box[key], ranks.ep_group)
    return model_sd, opt_sd


def localised(ranks: Ranks | None, model, opt, model_sd: dict, opt_sd: dict) -> tuple[dict, dict]:
    """A whole state (one process's, or :func:`consolidated`) cut to this rank's
    experts, ready for ``load_state_dict``."""
    if ranks is None or ranks.expert == 1:
        return model_sd, opt_sd
    first = next(iter(model.moe_blocks.values()))
    mine = local_experts(first.n_experts, ranks.ep_group)
    for box, key in list(_each_expert_tensor(model, model_sd, opt, opt_sd)):
        box[key] = box[key][mine.start:mine.stop].clone()
    return model_sd, opt_sd


def writes_checkpoints(ranks: Ranks | None) -> bool:
    return ranks is None or dist.get_rank() == 0
