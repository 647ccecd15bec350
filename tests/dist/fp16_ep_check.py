"""Run under ``torchrun --nproc_per_node 2``: ``fp16_ep_check.py OUT CONFIG PLANT``
trains CONFIG (fp16, expert parallel) into OUT with an inf planted in rank 1's expert
gradient (only rank 1's experts) at step PLANT. Rank 0 prints one line ``fp16ep
<json>``: per rank, the loss scale after every step, whether the replicated weights
moved in it, and a digest of those weights at the end."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from moe_studio.config import load
from moe_studio.engine.parallel.process_group import destroy_process_group
from moe_studio.engine.trainer import Trainer


def main() -> None:
    out, config, plant = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    try:
        trainer = Trainer(load(config), runs_dir=out)
        rank = trainer.ranks.rank
        model = trainer.models[0]
        blk = model.moe_blocks[min(model.moe_blocks)]
        armed = {"on": False}
        if rank == 1:
            blk.w1.register_hook(lambda g: g * math.inf if armed["on"] else g)
        dense = model.tok_emb.weight
        scales, moved = [], []
        while not trainer.done:
            armed["on"] = trainer.step_count + 1 == plant
            before = dense.detach().clone()
            trainer.step()
            scales.append(trainer.scalers[0].get_scale())
            moved.append(not torch.equal(before, dense.detach()))
        every = [None, None]
        dist.all_gather_object(every, {"scales": scales, "moved": moved,
                                       "digest": float(dense.detach().double().sum())})
        trainer.close("finished")
        if rank == 0:
            print("fp16ep " + json.dumps(every), flush=True)
    finally:
        destroy_process_group()


if __name__ == "__main__":
    main()
