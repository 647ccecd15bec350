"""How a run's ranks are arranged: ``world = data x expert``, or, for an ensemble of
independent members (seeds, bagging), ``world = member``: each rank trains a block of
whole members on the whole batch.

Rank ``r`` belongs to expert group ``r // expert`` (consecutive ranks share one copy of
every expert, each holding ``n_experts / expert`` of them) and to expert-data group
``r % expert`` (the ranks that hold the same experts and average their gradients).
Every rank reads its own shard of the global batch, whatever the layout: a step sees
``data.batch_size x world`` sequences. Pure arithmetic, no torch: the config layer
and the launcher use it before any process group exists.
"""
from __future__ import annotations

from dataclasses import dataclass

from ...config import ConfigError, ExperimentConfig
from ...config.validate import member_spread_problem, parallel_data_size


@dataclass(frozen=True)
class Layout:
    world: int
    data: int
    expert: int
    member: int = 1           # ranks the ensemble's members are spread over
    members: int = 1          # the ensemble's members (all ranks together)

    def describe(self) -> str:
        if self.member > 1:
            per = self.members // self.member
            return (f"{self.world} ranks = members {self.members} spread {per} per rank "
                    f"(whole batch each)")
        return f"{self.world} ranks = data {self.data} x expert {self.expert}"

    def member_ids(self, rank: int) -> range:
        """The members rank ``rank`` trains: a contiguous block, so the ranks' blocks,
        gathered in rank order, are the members in order."""
        per = self.members // self.member
        return range(rank * per, (rank + 1) * per)

    def expert_group(self, rank: int) -> list[int]:
        """The ranks that together hold every expert, ``rank`` among them."""
        start = rank // self.expert * self.expert
        return list(range(start, start + self.expert))

    def expert_data_group(self, rank: int) -> list[int]:
        """The ranks that hold the same experts as ``rank``."""
        return list(range(rank % self.expert, self.world, self.expert))


def resolve_layout(cfg: ExperimentConfig, world: int) -> Layout:
    """The layout of ``cfg.parallel`` on ``world`` ranks; ConfigError naming the knob
    when it does not fit."""
    par = cfg.parallel
    spread = member_spread_problem(cfg, world)
    if spread is not None:
        raise spread
    if world > 1 and cfg.ensemble.members > 1:
        return Layout(world=world, data=1, expert=1, member=world, members=cfg.ensemble.members)
    try:
        data = parallel_data_size(par.data)
    except ValueError:
        raise ConfigError("parallel.data", f"parallel.data ({par.data!r}) must be 'auto' or a "
                                           f"whole number of ranks >= 1") from None
    if par.expert > 1 and cfg.moe.n_experts % par.expert:
        raise ConfigError("parallel.expert", f"parallel.expert ({par.expert}) must divide "
                                             f"moe.n_experts ({cfg.moe.n_experts})")
    if world % par.expert:
        raise ConfigError("parallel.expert", f"parallel.expert ({par.expert}) must divide the "
                                             f"world size ({world} ranks)")
    if data is None:
        data = world // par.expert
    if data * par.expert != world:
        raise ConfigError("parallel.data", f"parallel.data ({data}) x parallel.expert "
                                           f"({par.expert}) must equal the world size "
                                           f"({world} ranks)")
    return Layout(world=world, data=data, expert=par.expert)
