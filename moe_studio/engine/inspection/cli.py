"""``moe-studio inspect MODEL``: route a corpus through a pretrained MoE checkpoint and
record the run; progress on stderr, the run folder on stdout. Ctrl+C stops after the
current batch and keeps what was recorded (a second Ctrl+C aborts)."""
from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

from .options import InspectOptions


def add_parser(sub) -> None:
    d = InspectOptions(model="")
    p = sub.add_parser("inspect", help="route a corpus through a pretrained Hugging Face MoE "
                                       "checkpoint and record its routing (no download)")
    p.add_argument("model", help="local Hugging Face folder (config.json + *.safetensors), or a "
                                 "model id already in the local Hugging Face cache")
    p.add_argument("--corpus", default=d.corpus,
                   help="'embedded', a text file, or a folder (one domain per file / subfolder)")
    p.add_argument("--tokens", type=int, default=d.tokens, help=f"model tokens to route (default {d.tokens:,})")
    p.add_argument("--seq-len", type=int, default=d.seq_len, help=f"tokens per window (default {d.seq_len})")
    p.add_argument("--batch-size", type=int, default=d.batch_size,
                   help=f"windows per forward = per recorded step (default {d.batch_size})")
    p.add_argument("--dtype", default=d.dtype, choices=["auto", "bf16", "fp16", "fp32"],
                   help="weights and compute: auto = bf16 on a GPU, fp32 on the CPU")
    p.add_argument("--device", default=d.device, help="auto, cpu, cuda, cuda:1, mps")
    p.add_argument("--precision-every", type=int, default=d.precision_every,
                   help="headroom statistics on step 1 and every N steps (0: off)")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="allow the checkpoint's own Python code (only for models you trust)")
    p.add_argument("--name", default="", help="run name (default inspect-<folder>)")
    p.add_argument("--out", type=Path, default=None,
                   help="runs folder (default: $MOE_STUDIO_RUNS or ./runs)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument("--estimate", action="store_true",
                   help="only print the memory estimate as one JSON line (reads no weights)")
    p.set_defaults(func=cmd_inspect)


def cmd_inspect(args: argparse.Namespace) -> int:
    err = sys.stderr
    opts = InspectOptions(model=args.model, corpus=args.corpus, tokens=args.tokens,
                          seq_len=args.seq_len, batch_size=args.batch_size, dtype=args.dtype,
                          device=args.device, trust_remote_code=args.trust_remote_code,
                          precision_every=args.precision_every, name=args.name)
    if args.estimate:
        import json

        from .loading import estimate
        est = estimate(opts)
        print(json.dumps(est))
        return 0 if est["ok"] else 2
    if not args.quiet:
        print(f"loading {args.model} …", file=err, flush=True)
    from ...data import CorpusError
    from .loading import InspectError
    try:
        from .inspector import Inspector
        ins = Inspector(opts, runs_dir=args.out)
    except (InspectError, CorpusError) as e:
        print(f"moe-studio inspect: {e}", file=err)
        return 2
    if not args.quiet:
        print(f"{ins.family.title} · {len(ins.blocks)} MoE layers × {ins.n_experts} experts, "
              f"top-{ins.top_k} · {ins.plan.describe()}"
              + (f" · {'; '.join(ins.plan.notes)}" if ins.plan.notes else ""), file=err)
        print(f"routing {sum(ins.tokens_per_domain_planned):,} tokens of "
              f"{len(ins.domain_names)} domain(s) in {ins.total_steps} batches → {ins.run_dir}",
              file=err, flush=True)
    stop = {"flag": False}

    def _sigint(signum, frame):
        if stop["flag"]:
            raise KeyboardInterrupt
        stop["flag"] = True
        print("\nstopping after this batch, keeping what was recorded (Ctrl+C again to abort)…",
              file=err)

    old = signal.signal(signal.SIGINT, _sigint)
    tty = err.isatty()
    last = 0.0
    status = "finished"
    try:
        while not ins.done and not stop["flag"]:
            info = ins.step()
            now = time.time()
            if not args.quiet and (ins.done or now - last >= (0.25 if tty else 5.0)):
                last = now
                line = (f"step {info.step}/{info.total_steps} · {ins.tokens_done:,} tokens · "
                        f"{info.tokens_per_s:,.0f} tok/s · ETA {info.eta_s:,.0f} s")
                err.write(("\r" + line + "\x1b[K") if tty else line + "\n")
                err.flush()
        if stop["flag"]:
            status = "stopped"
        ins.close(status)
    except BaseException as e:  # noqa: BLE001  Ctrl+C and SystemExit too: the run is closed with its status
        import traceback
        ins.close("failed", error=traceback.format_exc())
        if isinstance(e, KeyboardInterrupt):
            print("\naborted", file=err)
            return 130
        print(f"\nmoe-studio inspect: failed: {e}", file=err)
        return 1
    finally:
        signal.signal(signal.SIGINT, old)
    if tty and not args.quiet:
        err.write("\n")
    print(f"{status}: {ins.step_count} batches, {ins.tokens_done:,} tokens", file=err)
    print(ins.run_dir)
    return 0
