"""One rank of ``moe-studio bench distributed``'s expert-parallel measurement (run by
torch.distributed.run): forward + backward of an expert-parallel MoE layer, with the
time spent inside its all-to-alls measured apart. Rank 0 prints one JSON line."""
from __future__ import annotations

import json
import sys
import time

import torch
import torch.distributed as dist

from ..config.schema import MoEConfig
from ..engine.moe_layer import MoEFeedForward
from ..engine.parallel import expert_parallel
from ..engine.parallel.expert_parallel import shard_experts


def main(tokens: int, d: int, experts: int, rounds: int) -> None:
    dist.init_process_group("gloo")
    torch.manual_seed(0)
    layer = MoEFeedForward(d, MoEConfig(n_experts=experts, top_k=2), 4 * d)
    shard_experts(layer, dist.group.WORLD)
    x = torch.randn(1, tokens, d, requires_grad=True)
    spent = [0.0]
    inner = expert_parallel.dist.all_to_all_single

    def timed(*a, **kw):
        t0 = time.perf_counter()
        out = inner(*a, **kw)
        spent[0] += time.perf_counter() - t0
        return out

    expert_parallel.dist.all_to_all_single = timed   # the layer's own calls, timed
    layer_s = []
    a2a_s = []
    try:
        for i in range(rounds + 2):
            dist.barrier()
            spent[0] = 0.0
            t0 = time.perf_counter()
            layer(x).square().mean().backward()
            dt = time.perf_counter() - t0
            if i >= 2:     # two warm-up rounds
                layer_s.append(dt)
                a2a_s.append(spent[0])
    finally:
        expert_parallel.dist.all_to_all_single = inner
    layer_s.sort()
    a2a_s.sort()
    if dist.get_rank() == 0:
        mid = len(layer_s) // 2
        print(json.dumps({"layer_ms": round(1e3 * layer_s[mid], 3),
                          "all_to_all_ms": round(1e3 * a2a_s[mid], 3),
                          "all_to_all_share": round(a2a_s[mid] / layer_s[mid], 3)}), flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:5]))
