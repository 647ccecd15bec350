"""Run under ``torchrun --nproc_per_node 2``: trains each config TOML given after the
output folder (``train_check.py OUT a.toml b.toml``) with the engine's own Trainer, one
run folder per config under OUT/<config stem>. The test compares the stores with one
process training the global batch."""
from __future__ import annotations

import sys
from pathlib import Path

from moe_studio.config import load
from moe_studio.engine.parallel.process_group import destroy_process_group
from moe_studio.engine.trainer import Trainer


def main() -> None:
    out = Path(sys.argv[1])
    try:
        for path in sys.argv[2:]:
            trainer = Trainer(load(path), runs_dir=out / Path(path).stem)
            while not trainer.done:
                trainer.step()
            trainer.close("finished")
            print(f"trained {Path(path).stem} rank {trainer.ranks.rank}", flush=True)
    finally:
        destroy_process_group()


if __name__ == "__main__":
    main()
