#!/usr/bin/env bash
# The checks and figures that need a CUDA GPU, in one script (how the README's GPU rows
# were taken): the real fp16 autocast + GradScaler and bf16 paths through the trainer,
# a one-rank torchrun on nccl, the MoE layer benchmark on the GPU, and `bench gpu`
# (tokens/s and MFU of a ~50 M-parameter MoE in bf16). Run from the repository root on a
# machine with a GPU and torch installed: bash resources/gpu_check.sh [OUT_DIR]
set -u
out=${1:-${OUT:-gpu_out}}
mkdir -p "$out"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
t0=$(date +%s)
stamp() { echo "== $(( $(date +%s) - t0 )) s: $*"; }
stamp "device"
nvidia-smi -L
$py -c "import torch, sys; print('torch', torch.__version__, 'python', sys.version.split()[0], torch.cuda.get_device_name())"

summary() {  # the run's losses, loss scale and precision events, read back from its store
  $py - "$1" <<'PY'
import math, sys
from pathlib import Path
from moe_studio.store import open_run
run = sorted(Path(sys.argv[1]).glob("*/run.sqlite"))[-1].parent
with open_run(run) as r:
    s = r.scalars(["train/loss", "precision/loss_scale", "tokens_per_s"])
    loss = s[s.name == "train/loss"].sort_values("step")["value"]
    scale = s[s.name == "precision/loss_scale"]["value"]
    tps = s[s.name == "tokens_per_s"]["value"]
    print(f"{run.name}: status {r.status}, "
          f"precision {r.config['precision']['mode']}, loss {loss.iloc[0]:.3f} -> {loss.iloc[-1]:.3f} "
          f"(all finite: {bool(loss.map(math.isfinite).all())}), loss scale {sorted(set(scale))[:6]}, "
          f"median tokens/s {tps.median():.0f}, device {r.meta.get('device')}")
PY
}
stamp "bench gpu"
timeout 270 $py -m moe_studio bench gpu --json > "$out/gpu.json" || echo "gpu bench failed"
cat "$out/gpu.json"
for mode in fp16; do   # bf16: bench gpu trains in it
  stamp "train default MoE, precision $mode, 200 steps on cuda (headroom on)"
  timeout 150 $py -m moe_studio train --steps 200 --set precision.mode=$mode --set train.device=cuda \
      --set train.eval_every=100 --quiet --out "$out/runs_$mode" && summary "$out/runs_$mode"
done
stamp "torchrun, 1 rank on nccl, 40 steps"
timeout 100 $py -m torch.distributed.run --nproc_per_node 1 -m moe_studio train --steps 40 --quiet --set train.compile=off \
    --out "$out/runs_nccl" && summary "$out/runs_nccl"
stamp "bench moe-layer on cuda"
timeout 150 $py -c "
import json
from moe_studio.bench import moe_layer
print(json.dumps(moe_layer.run(json_out=True, device='cuda')))" > "$out/moe_layer.json" || echo "moe-layer bench failed"
tail -c 3000 "$out/moe_layer.json"; echo
stamp "done"
