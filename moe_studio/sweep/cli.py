"""``moe-studio sweep``: run a grid of experiments as a queue.

    moe-studio sweep CONFIG --grid moe.top_k=1,2,4 --grid moe.aux_loss_coef=0,0.01 \\
        [--seeds 3] [--parallel 2] [--out RUNS] [--dry-run]
    moe-studio sweep --resume SWEEP_DIR     # after a crash, Ctrl+C or a cancel
    moe-studio sweep --cancel SWEEP_DIR     # from another terminal
    moe-studio sweep --status SWEEP_DIR [--json]

Progress goes to stderr; ``--status --json`` and ``--dry-run --json`` print JSON on stdout.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

PROG = "moe-studio sweep"


def add_parser(sub) -> None:
    s = sub.add_parser("sweep", help="run a grid of experiments as a queue (resumable, cancellable)",
                       description=__doc__.split("\n\n")[0])
    s.add_argument("config", nargs="?", help="experiment config (.toml) every run starts from")
    s.add_argument("--preset", help="start from a named preset instead")
    s.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                   help="override one value of every run (repeatable)")
    s.add_argument("--steps", type=int, help="shorthand for --set train.steps=N")
    s.add_argument("--grid", action="append", default=[], metavar="SECTION.KEY=V1,V2,...",
                   help="a key to vary and its values (repeatable; every combination runs)")
    s.add_argument("--seeds", type=int, default=1,
                   help="runs per grid point with seeds train.seed, +1, +2, ... (default 1)")
    s.add_argument("--parallel", type=int, default=None, help="runs at a time (default 1)")
    s.add_argument("--name", help="the sweep's name (default: the config's name)")
    s.add_argument("--out", type=Path, default=None,
                   help="runs folder (default: $MOE_STUDIO_RUNS or ./runs); the sweep folder goes in it")
    s.add_argument("--dry-run", action="store_true", help="list the runs, start nothing")
    s.add_argument("--resume", metavar="SWEEP_DIR", help="go on with a sweep folder's queue")
    s.add_argument("--cancel", metavar="SWEEP_DIR", help="cancel a sweep (running runs stop, saved)")
    s.add_argument("--status", metavar="SWEEP_DIR", help="print a sweep's queue")
    # the app's start of a queue it has just made: nothing to recover or re-queue
    s.add_argument("--run", metavar="SWEEP_DIR", help=argparse.SUPPRESS)
    s.add_argument("--json", action="store_true", help="--status / --dry-run: JSON on stdout")
    s.set_defaults(func=cmd_sweep)


def _fail(text: str, code: int = 2) -> int:
    print(f"{PROG}: {' '.join(str(text).split())}", file=sys.stderr)
    return code


def cmd_sweep(args) -> int:
    from ..config import ConfigError
    from .grid import GridError
    from .queue import SweepError

    folders = [(f, v) for f, v in (("--resume", args.resume), ("--cancel", args.cancel),
                                   ("--status", args.status), ("--run", args.run)) if v]
    try:
        if len(folders) > 1:
            return _fail(f"{folders[0][0]} and {folders[1][0]} given: one at a time")
        if folders:
            given = [f for f, v in (("CONFIG", args.config), ("--grid", args.grid),
                                    ("--preset", args.preset), ("--set", args.set)) if v]
            if given:
                return _fail(f"{folders[0][0]} works on an existing sweep; drop {', '.join(given)}")
            flag, folder = folders[0]
            if flag == "--status":
                return _status(Path(folder), args.json)
            if flag == "--cancel":
                from .queue import cancel
                q = cancel(folder)
                print(f"{PROG}: cancelled: {q.describe()}", file=sys.stderr)
                return 0
            return _run(Path(folder), args.parallel, resume=flag == "--resume")
        return _new(args)
    except (ConfigError, GridError, SweepError) as e:
        return _fail(e)


def _new(args) -> int:
    from ..config.inputs import build_config, check_environment
    from ..paths import check_output_dir, default_runs_dir
    from .grid import check_points_fit, expand, parse_grid
    from .runner import create_sweep

    check_environment()
    notes: list[str] = []  # said once every check passed: a refusal stays one line
    base = build_config(args.config, preset=args.preset, sets=args.set or [], steps=args.steps,
                        note=notes.append)
    if args.parallel is not None and args.parallel < 1:
        return _fail(f"--parallel must be at least 1 (got {args.parallel})")
    axes = parse_grid(args.grid, base, args.seeds)
    points = expand(base, axes)
    check_points_fit(points)
    runs_dir = None
    if not args.dry_run:
        runs_dir = (check_output_dir(args.out, "--out") if args.out is not None else
                    check_output_dir(default_runs_dir(), "MOE_STUDIO_RUNS"
                                     if os.environ.get("MOE_STUDIO_RUNS") else "runs folder ./runs"))
    for text in notes:
        print(f"{PROG}: {text}", file=sys.stderr)
    if args.dry_run:
        if args.json:
            print(json.dumps([{"index": p.index, "values": p.values} for p in points], indent=1))
        else:
            for p in points:
                print(f"{p.index:>3}  {p.label()}")
        print(f"{PROG}: {len(points)} runs (dry run: nothing started)", file=sys.stderr)
        return 0
    q = create_sweep(base, [a.key for a in axes], points, runs_dir,
                     parallel=args.parallel or 1, name=args.name)
    print(f"{PROG}: {len(points)} runs queued in {q.dir}", file=sys.stderr)
    return _run(q.dir, None, resume=False)


def _run(folder: Path, parallel: int | None, resume: bool) -> int:
    from .runner import SweepRunner

    if parallel is not None and parallel < 1:
        return _fail(f"--parallel must be at least 1 (got {parallel})")
    return SweepRunner(folder, parallel=parallel).run(resume=resume)


def _status(folder: Path, as_json: bool) -> int:
    from .queue import SweepQueue, runner_alive

    q = SweepQueue.load(folder)
    alive = runner_alive(folder)
    if as_json:
        print(json.dumps({"name": q.name, "dir": str(q.dir), "keys": q.keys, "running": alive,
                          "cancel": q.cancel, "counts": q.counts(),
                          "runs": [{"index": e.index, "state": e.state, "values": e.values,
                                    "run": str(q.run_path(e)) if e.run else None,
                                    "error": e.error} for e in q.entries]}, indent=1))
        return 0
    print(q.describe() + (" · a runner is working on it" if alive else " · no runner"))
    for e in q.entries:
        run = q.run_path(e)
        print(f"{e.index:>3}  {e.state:<9}  {e.label}" + (f"  {run.name}" if run else "")
              + (f"  ({e.error})" if e.error else ""))
    return 0



def add_sweep_listing(runs_parser) -> None:
    """Teach ``moe-studio runs`` (store/cli.py, which may not import sweeps) a sweep
    folder: its runs, every one started so far, in grid order."""
    plain = runs_parser.get_default("func")

    def runs_of(folder: Path):
        from ..store import list_runs, run_info
        from .queue import QUEUE_NAME, STATES, SweepQueue

        if not (folder / QUEUE_NAME).is_file():
            return list_runs(folder)
        return [run_info(p) for p in SweepQueue.load(folder).run_paths(STATES)]   # SweepError: one line

    runs_parser.set_defaults(func=lambda args: plain(args, list_folder=runs_of))
