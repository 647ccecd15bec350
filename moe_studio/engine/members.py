"""What each member of a run trains with: its model, optimizer, loss scaler, batch
stream and precision monitor (member m at index m of every list).

A run of one model has one member. The trainer steps the members; the ensemble engine
decides which of them train when, and (snapshot ensembles) lets one continue from
another's state.
"""
from __future__ import annotations

import copy
from typing import Callable

import numpy as np
import torch

from ..config import ExperimentConfig
from ..data import BatchSampler, bootstrap_starts
from .amp import grad_scaler
from .headroom import HeadroomMonitor
from .model import MoEGPT


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW (betas 0.9, 0.95) with weight decay on matrices only."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        # Matrices (and stacked expert weights) decay; norms, biases and the position
        # table do not (the nanoGPT convention: decay params with dim >= 2, but
        # position embeddings are a lookup table, not a projection).
        (decay if p.dim() >= 2 and "pos_emb" not in name else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    # The fused kernel, on CUDA and on the CPU (torch >= 2.4; faster than the
    # multi-tensor foreach path, which is faster than the per-tensor loop torch picks
    # by default on the CPU). Older torch: foreach.
    kw = dict(lr=lr, betas=(0.9, 0.95), eps=1e-8)
    try:
        return torch.optim.AdamW(groups, fused=True, **kw)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(groups, foreach=True, **kw)


class Members:
    """The per-member training state of a run with ``config.ensemble.members`` members
    of one architecture, built on ``device`` from ``train_tokens`` (the corpus's
    training split). ``ids``: the members built here (an ensemble spread over ranks:
    this rank's block); member ``ids[i]`` is at index i of every list, with the seeds
    and data it has in a one-process run. ``scaler_group``: the process group whose
    ranks skip fp16 steps together (``amp.grad_scaler``)."""

    def __init__(self, cfg: ExperimentConfig, train_tokens: np.ndarray, device: torch.device,
                 prepare: Callable[[MoEGPT], torch.nn.Module] | None = None,
                 ids: range | None = None, scaler_group=None):
        self.device = device
        self._pinned: dict[int, torch.Tensor] = {}   # CUDA: per-member staging for batches
        n = cfg.ensemble.members
        self.ids = range(n) if ids is None else ids
        self.models: list[MoEGPT] = []
        # What a training forward runs through: the model itself, or what ``prepare``
        # made of it (torch.distributed: this rank's experts, wrapped by DDP).
        self.runners: list[torch.nn.Module] = []
        self.optimizers: list[torch.optim.Optimizer] = []
        self.params: list[list[torch.nn.Parameter]] = []   # each member's, listed once
        self.samplers: list[BatchSampler] = []
        for m in self.ids:
            # Member 0 of any run uses the run's seed, so a one-member run equals the
            # same config without an ensemble section.
            torch.manual_seed(cfg.train.seed + 1000 * m)
            model = MoEGPT(cfg.model, cfg.moe, context=cfg.data.context).to(device)
            self.models.append(model)
            self.runners.append(prepare(model) if prepare is not None else model)
            self.params.append(list(model.parameters()))
            self.optimizers.append(make_optimizer(model, cfg.train.lr, cfg.train.weight_decay))
            starts = None
            if cfg.ensemble.method == "bagging" and n > 1:
                starts = bootstrap_starts(len(train_tokens), cfg.data.context,
                                          seed=cfg.train.seed + 7919 * (m + 1))
            self.samplers.append(BatchSampler(train_tokens, cfg.data.context,
                                              cfg.data.batch_size, seed=cfg.train.seed + m,
                                              starts=starts))
        torch.manual_seed(cfg.train.seed)
        self.scalers = [grad_scaler(device, cfg.precision, scaler_group) for _ in self.ids]
        # Headroom statistics every precision.headroom_every steps, and which module
        # went non-finite first (engine/headroom.py).
        p = cfg.precision
        self.monitors: list[HeadroomMonitor | None] = [
            HeadroomMonitor(model, every=p.headroom_every if p.headroom else 0)
            if (p.headroom or p.stop_on_nan) else None for model in self.models]

    def __len__(self) -> int:
        return len(self.models)

    def batch(self, m: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Member ``m``'s next training batch (inputs, targets), int64 [B, T] each, on
        the device."""
        x, y = self.samplers[m].next()
        if self.device.type != "cuda":
            return torch.from_numpy(x).to(self.device), torch.from_numpy(y).to(self.device)
        # A non-blocking copy is only asynchronous from pinned memory. The staging
        # buffers are reused: the trainer synchronises at the end of every step, so the
        # previous step's copy is done before they are written again.
        buf = self._pinned.get(m)
        if buf is None or buf.shape != (2, *x.shape):
            buf = self._pinned[m] = torch.empty((2, *x.shape), dtype=torch.int64).pin_memory()
        buf[0].copy_(torch.from_numpy(x))
        buf[1].copy_(torch.from_numpy(y))
        both = buf.to(self.device, non_blocking=True)
        return both[0], both[1]

    def continue_from(self, src: int, dst: int) -> None:
        """Member ``dst`` takes member ``src``'s weights, optimizer state, loss scale and
        batch stream (snapshot ensembles: the next cycle starts where one stopped)."""
        self.models[dst].load_state_dict(self.models[src].state_dict())
        self.optimizers[dst].load_state_dict(copy.deepcopy(self.optimizers[src].state_dict()))
        if self.scalers[src].is_enabled():
            self.scalers[dst].load_state_dict(self.scalers[src].state_dict())
        self.samplers[dst].load_state_dict(self.samplers[src].state_dict())
