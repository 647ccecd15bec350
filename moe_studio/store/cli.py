"""``moe-studio runs`` and ``moe-studio export``.

Both print a problem with a run as one line, ``moe-studio <cmd>: <file>: <problem>``, on
stderr and exit non-zero; neither ever writes inside a runs folder.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

from .errors import RunFileError
from .export import FORMATS, export_run
from .runs import RunInfo, list_runs


def add_parsers(subparsers) -> None:
    """Register the ``runs`` and ``export`` subcommands on an argparse subparsers object;
    each parser's ``func`` default is the command to call with the parsed args."""
    r = subparsers.add_parser("runs", help="list runs: status, steps, final losses, key config")
    r.add_argument("dir", nargs="?", type=Path, default=None,
                   help="runs folder (default: $MOE_STUDIO_RUNS or ./runs)")
    r.add_argument("--json", action="store_true", help="one JSON object per run instead of a table")
    r.set_defaults(func=cmd_runs)

    e = subparsers.add_parser("export", help="export a run's records as CSV or Parquet files")
    e.add_argument("run", type=Path, help="run folder (or its run.sqlite)")
    e.add_argument("--format", choices=FORMATS, default="csv", help="file format (default: csv)")
    e.add_argument("--out", type=Path, required=True,
                   help="folder to write scalars, tensors, histograms, snapshots, events into")
    e.set_defaults(func=cmd_export)


def cmd_runs(args) -> int:
    """Print one line per run (or JSON lines). Exit 1 if the folder or any run in it
    cannot be read (each such run still gets its one-line error)."""
    from ..config import ConfigError
    from ..paths import default_runs_dir

    runs_dir = args.dir
    try:
        if runs_dir is None:
            runs_dir = default_runs_dir()
        infos = list_runs(runs_dir)
    except (RunFileError, ConfigError) as e:
        print(f"moe-studio runs: {e}", file=sys.stderr)
        return 1
    if getattr(args, "json", False):
        for i in infos:
            print(json.dumps(_info_dict(i)))
    else:
        _print_table(infos, runs_dir)
    for i in infos:
        if i.error:
            print(f"moe-studio runs: {i.error}", file=sys.stderr)
    return 1 if any(i.error for i in infos) else 0


def cmd_export(args) -> int:
    """Export one run; print the files written. Exit 1 with one line on stderr if the
    run cannot be read or the export cannot be written."""
    from ..config import ConfigError
    from ..config.inputs import os_problem
    from ..paths import check_output_dir

    try:
        out = check_output_dir(args.out, "--out", outside_runs=True)
        files = export_run(args.run, args.format, out)
    except (RunFileError, ConfigError) as e:
        print(f"moe-studio export: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        where = f"{e.filename}: " if e.filename else ""
        print(f"moe-studio export: cannot write {where}{os_problem(e)}", file=sys.stderr)
        return 1
    except (RuntimeError, ValueError) as e:
        print(f"moe-studio export: {' '.join(str(e).split())}", file=sys.stderr)
        return 1
    for f in files:
        print(f)
    return 0


# ---------------------------------------------------------------------- formatting
def _info_dict(i: RunInfo) -> dict:
    d = {k: getattr(i, k) for k in i.__dataclass_fields__}
    d["path"] = str(i.path)
    # JSON has no NaN: a diverged loss is written as null with the text "nan" beside it
    for k in ("train_loss", "val_loss"):
        if isinstance(d[k], float) and not math.isfinite(d[k]):
            d[k + "_text"] = str(d[k])
            d[k] = None
    return d


def _fmt_loss(v: float | None) -> str:
    return "-" if v is None else f"{v:.4f}"


def _print_table(infos: list[RunInfo], runs_dir) -> None:
    if not infos:
        print(f"no runs in {runs_dir}")
        return
    head = ("run", "status", "steps", "train", "val", "router", "E", "k", "precision", "M", "started")
    rows = []
    for i in infos:
        if i.error:
            rows.append((i.run_id, "unreadable", "", "", "", "", "", "", "", "", ""))
            continue
        steps = "-" if i.last_step is None or i.last_step < 0 else str(i.last_step)
        if i.total_steps and i.status == "running":
            steps += f"/{i.total_steps}"
        started = time.strftime("%Y-%m-%d %H:%M", time.localtime(i.started)) if i.started else ""
        rows.append((i.run_id, i.status, steps, _fmt_loss(i.train_loss), _fmt_loss(i.val_loss),
                     *("" if v is None else str(v) for v in
                       (i.router, i.n_experts, i.top_k, i.precision, i.members)), started))
    widths = [max(len(str(r[c])) for r in [head, *rows]) for c in range(len(head))]
    for r in [head, *rows]:
        print("  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip())


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (``python -m moe_studio.store.cli runs DIR``)."""
    ap = argparse.ArgumentParser(prog="moe-studio")
    add_parsers(ap.add_subparsers(dest="command", required=True))
    args = ap.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
