"""One run's ranks as the trainer sees them: layout, groups, and what each rank does
to its model, batches and gradients so that the run trains as one process would on
the global batch (``data.batch_size x world`` sequences).

Data parallelism is PyTorch's DistributedDataParallel: the models are small enough to
fit on every rank, DDP overlaps the gradient all-reduce with the backward and keeps
the model an ordinary module (its statistics, hooks and checkpoints work unchanged).
FSDP2's ``fully_shard`` saves memory by sharding parameters, which these models do not
need and which would turn every statistic read of a weight into a gather. Expert
weights under expert parallelism are not replicated over the world, so DDP ignores
them and :meth:`Ranks.sync_and_clip` averages them over the ranks that hold the same
experts.
"""
from __future__ import annotations

import contextlib
import os
import signal
import time
from typing import Any, Callable

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from ...config import ConfigError, ExperimentConfig
from ...data import BatchSampler
from .expert_parallel import shard_experts
from .layout import Layout, resolve_layout
from .control import CONTROL_ENV, read_control
from .member_parallel import MemberSpread, RelayWriter
from .recording import NullWriter
from .process_group import init_process_group, launched_world_size, new_groups, rank_device


class RankShard:
    """Rank ``rank``'s rows of every global batch a one-process sampler would draw:
    ``sampler`` is rebuilt with ``world x`` its batch size on the same seed and
    starts, so the ranks' shards, one after another, are that process's batch."""

    def __init__(self, sampler: BatchSampler, rank: int, world: int):
        self.batch_size = sampler.batch_size
        self.rows = slice(rank * self.batch_size, (rank + 1) * self.batch_size)
        self.sampler = BatchSampler(sampler.tokens, sampler.context, sampler.batch_size * world,
                                    seed=sampler.seed, starts=sampler.starts)

    def next(self):
        x, y = self.sampler.next()
        return x[self.rows], y[self.rows]

    def state_dict(self) -> dict:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.sampler.load_state_dict(state)


def expert_param_names(model: torch.nn.Module) -> list[str]:
    """Names of the MoE blocks' stacked expert weights (w1, w2) in ``model``."""
    return [f"{name}.{w}" for name, mod in model.named_modules()
            if hasattr(mod, "ep_group") for w in ("w1", "w2")]


class Ranks:
    """This process's place in a run of ``layout.world`` ranks (``rank``)."""

    def __init__(self, cfg: ExperimentConfig, layout: Layout, device: torch.device):
        self.cfg = cfg
        self.layout = layout
        self.device = device
        self.rank = dist.get_rank()
        self.world = layout.world
        self.expert = layout.expert
        # the run's config records the data-parallel size it ran with, not 'auto'
        cfg.parallel.data = str(layout.data)
        world = list(range(self.world))
        # An ensemble spread over the ranks: each trains whole members on the whole
        # batch (member_parallel.py); nothing below (DDP, shards) applies to it.
        self.spread = MemberSpread(layout, self.rank) if layout.member > 1 else None
        self.ep_group = self.edp_group = None
        if self.expert > 1:
            self.ep_group = new_groups([layout.expert_group(r) for r in world[::self.expert]])
            self.edp_group = new_groups([layout.expert_data_group(r) for r in range(self.expert)])

    @classmethod
    def start(cls, cfg: ExperimentConfig, device: torch.device) -> "Ranks | None":
        """Join the launcher's process group when there is one of more than one rank
        (None: one process). The layout is checked before joining, so a config that
        does not fit the world size fails on every rank with the same message."""
        world = launched_world_size()
        if world <= 1:
            if cfg.parallel.processes > 1:
                raise ConfigError("parallel.processes",
                                  f"parallel.processes ({cfg.parallel.processes}) needs its ranks "
                                  f"started by a launcher: moe-studio train CONFIG --nproc "
                                  f"{cfg.parallel.processes}, or torchrun (see the command under "
                                  f"the form's Parallel section); this process trains alone")
            return None
        layout = resolve_layout(cfg, world)
        device = rank_device(device)
        init_process_group(device, cfg.parallel.timeout_s)
        return cls(cfg, layout, device)

    # ------------------------------------------------------------------ the run
    def meta(self) -> dict:
        """What the run's metadata says about its ranks."""
        return {"world_size": self.world, "parallel_data": self.layout.data,
                "parallel_expert": self.expert, "parallel_members": self.layout.member,
                "parallel_layout": self.layout.describe(), "backend": dist.get_backend()}

    def writer(self, create: Callable[[], Any]):
        """Rank 0's writer from ``create()``, a :class:`NullWriter` of the same run on
        the others. A rank 0 that cannot create the run says why on every rank."""
        made, error = None, ""
        if self.rank == 0:
            try:
                made = create()
            except Exception as e:  # noqa: BLE001 - re-raised below, after telling the others
                error = " ".join(str(e).split()) or type(e).__name__
                box = [("", "", error)]
                dist.broadcast_object_list(box, src=0)
                raise
            box = [(str(made.run_dir), str(made.run_id), "")]
        else:
            box = [None]
        dist.broadcast_object_list(box, src=0)
        run_dir, run_id, error = box[0]
        if error:
            raise RuntimeError(f"rank 0 could not create the run: {error}")
        if made is not None:
            return made
        if self.spread is not None:
            return RelayWriter(run_dir, run_id, self.spread.ids.start)
        return NullWriter(run_dir, run_id)

    @property
    def loss_scale_group(self):
        """The ranks whose fp16 loss scalers skip steps together: the world when the
        ranks train one model (data, expert parallel); None for a spread ensemble,
        whose members each have their own scaler on one rank."""
        return dist.group.WORLD if self.spread is None else None

    # ------------------------------------------------------------------ building
    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """This rank's part of ``model`` (built whole, from the same seed on every rank)
        and the module to run forwards through (DDP). A member of a spread ensemble
        lives on this rank alone: it runs as it is."""
        if self.spread is not None:
            return model
        for blk in model.moe_blocks.values():
            if self.expert > 1:
                shard_experts(blk, self.ep_group)
            blk.balance_group = dist.group.WORLD
        ignore = expert_param_names(model) if self.expert > 1 else []
        if ignore:
            DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, ignore)
        ids = [self.device.index] if self.device.type == "cuda" else None
        # The only buffers are aux_free biases, which every rank moves by the same
        # all-reduced loads: nothing to broadcast each step.
        return DistributedDataParallel(model, device_ids=ids, broadcast_buffers=False)

    def shard_batches(self, samplers: list) -> None:
        """Every member's sampler replaced, in place, by this rank's shard of it (a
        spread ensemble's members read the whole batch: nothing to replace)."""
        if self.spread is not None:
            return
        for i, s in enumerate(samplers):
            samplers[i] = RankShard(s, self.rank, self.world)

    def seed(self, seed: int) -> None:
        """A random stream of this rank's own (dropout, jitter, router noise) once the
        weights, drawn alike on every rank, exist."""
        torch.manual_seed(seed + 1_000_003 * self.rank)

    # ------------------------------------------------------------------ control
    def between_steps(self, stop_requested: bool) -> bool:
        """Whether every rank stops now: true when any rank was asked to (a signal)
        or rank 0's control file (the app's Stop) says so; while it says pause, the
        ranks wait here, agreeing again every 0.2 s, so no collective times out."""
        codes = {"run": 0, "pause": 1, "stop": 2}
        while True:
            word = read_control(os.environ.get(CONTROL_ENV)) if self.rank == 0 else "run"
            t = torch.tensor([codes[word], int(stop_requested)], dtype=torch.int32,
                             device=self.device)
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            state, asked = t.tolist()
            if asked or state == 2:
                return True
            if state == 0:
                return False
            time.sleep(0.2)

    def explain_failure(self, error: str, wait_s: float = 3.0) -> str:
        """Why the run failed, as far as the ranks can tell each other: this rank
        leaves ``error`` in the launcher's store, waits up to ``wait_s`` for the other
        ranks' words, and names each rank that said nothing (it died or hangs)."""
        store = _launcher_store()
        if store is None:
            return f"rank {self.rank}: {error}"
        key = "moe_studio/failed/{}"
        try:
            store.set(key.format(self.rank), error)
        except Exception:  # noqa: BLE001 - the store went with the launcher: say what we know
            return f"rank {self.rank}: {error}"
        deadline = time.monotonic() + wait_s
        heard: dict[int, str] = {self.rank: error}
        while len(heard) < self.world and time.monotonic() < deadline:
            for r in range(self.world):
                if r not in heard:
                    try:
                        if store.check([key.format(r)]):
                            heard[r] = store.get(key.format(r)).decode("utf-8", "replace")
                    except Exception:  # noqa: BLE001
                        deadline = 0.0
            time.sleep(0.05)
        silent = [r for r in range(self.world) if r not in heard]
        parts = [f"rank {r} said nothing (the process died or hangs)" for r in silent]
        parts += [f"rank {r}: {heard[r]}" for r in sorted(heard)]
        return "; ".join(parts)

    def test_fault(self, step: int) -> None:
        """Tests only: ``MOE_STUDIO_TEST_KILL_RANK=R:S`` kills rank R (SIGKILL, no
        goodbye) once it has completed step S."""
        spec = os.environ.get("MOE_STUDIO_TEST_KILL_RANK", "")
        if spec and spec == f"{self.rank}:{step}":
            os.kill(os.getpid(), signal.SIGKILL)

    # ------------------------------------------------------------------ each step
    def shard(self, rows):
        """This rank's rows of a batch of the global batch size (an array [B*world, ...])."""
        n = len(rows) // self.world
        return rows[self.rank * n:(self.rank + 1) * n]

    def sum_over_world(self, *values: float) -> list[float]:
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    @contextlib.contextmanager
    def same_tokens(self, models):
        """While every rank forwards the same tokens (probes): expert-parallel layers
        run them as one process would instead of counting each rank's copy."""
        blocks = [b for m in models for b in m.moe_blocks.values()]
        for b in blocks:
            b.replicated = True
        try:
            yield
        finally:
            for b in blocks:
                b.replicated = False

    def sync_and_clip(self, model: torch.nn.Module, params: list[torch.Tensor],
                      max_norm: float) -> torch.Tensor:
        """After the backward (DDP has averaged the replicated gradients): average the
        expert gradients over the ranks holding the same experts, then clip by the
        global norm, the norm one process would measure over the whole model. Returns
        that norm (0-d tensor, before clipping). ``max_norm`` <= 0 only measures."""
        experts = [p for blk in model.moe_blocks.values() for p in (blk.w1, blk.w2)] \
            if self.expert > 1 else []
        ids = {id(p) for p in experts}
        for p in experts:
            if p.grad is None:
                continue
            if self.layout.data > 1:
                dist.all_reduce(p.grad, group=self.edp_group)
            # the loss is the mean over all ranks' shards
            p.grad.div_(self.world)
        grads = [p.grad for p in params if p.grad is not None]
        zero = torch.zeros((), device=self.device)
        if not grads:
            return zero
        dense = sum((p.grad.float().square().sum() for p in params
                     if p.grad is not None and id(p) not in ids), zero)
        local = sum((p.grad.float().square().sum() for p in experts if p.grad is not None), zero)
        if experts:
            dist.all_reduce(local, group=self.ep_group)
        norm = (dense + local).sqrt()
        if max_norm > 0:
            coef = (max_norm / (norm + 1e-6)).clamp(max=1.0)
            for g in grads:
                g.mul_(coef.to(g.dtype))
        return norm


def _launcher_store():
    """The key-value store of the launcher's rendezvous (it outlives any rank)."""
    try:
        from torch.distributed.distributed_c10d import _get_default_store
        return _get_default_store()
    except Exception:  # noqa: BLE001 - a private accessor: without it, no cross-rank word
        return None
