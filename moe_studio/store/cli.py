"""``moe-studio runs`` and ``moe-studio export``.

Both print a problem with a run as one line, ``moe-studio <cmd>: <file>: <problem>``, on
stderr and exit non-zero. Listing and exporting never write inside a runs folder; only
the explicit ``runs tag|untag|note|rename|delete`` actions change a run.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Callable

from .errors import RunFileError
from .export import FORMATS, export_run
from .organise import TrashUnavailable, delete_run, edit_run
from .run_query import matches
from .runs import RunInfo, describe_setup, display_labels, list_runs, run_info


ACTIONS = ("tag", "untag", "note", "rename", "delete")
RUNS_USAGE = ("moe-studio runs [DIR | RUN | SAMPLE | samples] [--filter QUERY] [--json]\n"
              "       moe-studio runs tag|untag RUN TAG [TAG ...]\n"
              "       moe-studio runs note RUN TEXT      (\"\" clears it)\n"
              "       moe-studio runs rename RUN NEW-NAME\n"
              "       moe-studio runs delete RUN [--yes]")


def add_parsers(subparsers) -> None:
    """Register the ``runs`` and ``export`` subcommands on an argparse subparsers object;
    each parser's ``func`` default is the command to call with the parsed args."""
    r = subparsers.add_parser(
        "runs", help="list runs (status, steps, losses, setup, tags, note); tag, note, rename, delete",
        usage=RUNS_USAGE,
        description="RUN is a run folder, its run.sqlite, or the name of a sample run. The "
                    "changes are stored in the run itself; a run that is being written is "
                    "never changed or deleted.")
    r.add_argument("dir", nargs="?", default=None, metavar="DIR",
                   help="runs folder (default: $MOE_STUDIO_RUNS or ./runs), one run, a sample "
                        "run's name, 'samples' for every sample run, or an action word")
    r.add_argument("more", nargs="*", help=argparse.SUPPRESS)
    r.add_argument("--json", action="store_true", help="one JSON object per run instead of a table")
    r.add_argument("--filter", default="", metavar="QUERY",
                   help="only runs matching every word: tag:NAME, status:WORD, sweep:NAME, KEY=VALUE "
                        "(e.g. moe.top_k=2, precision.mode=bf16, top_k>=2), or text")
    r.add_argument("--yes", action="store_true",
                   help="delete: remove permanently without asking where there is no system trash")
    r.set_defaults(func=cmd_runs)

    e = subparsers.add_parser("export", help="export a run as CSV, Parquet or TensorBoard files")
    e.add_argument("run", help="run folder (or its run.sqlite), or a sample run's name")
    e.add_argument("--format", choices=FORMATS, default="csv", help="file format (default: csv)")
    e.add_argument("--out", type=Path, required=True,
                   help="folder to write scalars, tensors, histograms, snapshots, events into")
    e.set_defaults(func=cmd_export)


def _runs_target(arg) -> tuple[Path, bool]:
    """(folder, is one run) for the ``runs`` argument."""
    from ..paths import default_runs_dir, resolve_run_arg, sample_runs_dir
    from .runs import looks_like_run

    if arg is None:
        return default_runs_dir(), False
    p = resolve_run_arg(arg)
    if not p.exists() and str(arg) == "samples":
        return sample_runs_dir(), False
    if p.is_file() or (p.is_dir() and looks_like_run(p)):
        return p, True
    return p, False


def cmd_runs(args, list_folder: Callable[[Path], list[RunInfo]] = list_runs) -> int:
    """Print one line per run (or JSON lines), or do one of ACTIONS. Exit 1 if the
    folder or any run in it cannot be read (each such run still gets its one-line error).
    ``list_folder``: the runs of a folder (the sweep package teaches it sweep folders,
    which this layer may not read: ``sweep.cli.add_sweep_listing``); a ValueError it
    raises is the folder's one-line problem."""
    from ..config import ConfigError

    action = getattr(args, "dir", None)
    if str(action) in ACTIONS and not Path(str(action)).exists():
        return _run_action(str(action), list(getattr(args, "more", None) or []),
                           yes=bool(getattr(args, "yes", False)))
    if getattr(args, "more", None):
        print(f"moe-studio runs: one folder or run at a time (got {len(args.more) + 1}); "
              f"to change a run: {', '.join(ACTIONS)}", file=sys.stderr)
        return 2
    try:
        target, single = _runs_target(args.dir)
        infos = [run_info(target)] if single else list_folder(target)
    except (RunFileError, ConfigError, ValueError) as e:
        print(f"moe-studio runs: {e}", file=sys.stderr)
        return 1
    query = getattr(args, "filter", "") or ""
    shown = [i for i in infos if matches(i, query)]
    labels = display_labels(infos)
    if getattr(args, "json", False):
        for i in shown:
            print(json.dumps(_info_dict(i, labels)))
    else:
        _print_table(shown, target, labels, filtered=len(shown) != len(infos))
    for i in infos:
        if i.error:
            print(f"moe-studio runs: {i.error}", file=sys.stderr)
    return 1 if any(i.error for i in infos) else 0


def _run_action(action: str, words: list[str], *, yes: bool) -> int:
    """``runs tag|untag|note|rename|delete RUN ...``; 2 for a malformed command line,
    1 when the run cannot be changed."""
    from ..paths import resolve_run_arg

    prog = f"moe-studio runs {action}"
    need = {"tag": "RUN TAG [TAG ...]", "untag": "RUN TAG [TAG ...]", "note": "RUN TEXT",
            "rename": "RUN NEW-NAME", "delete": "RUN"}[action]
    if not words or (action in ("tag", "untag", "note", "rename") and len(words) < 2) \
            or (action == "delete" and len(words) > 1):
        print(f"{prog}: usage: {prog} {need}", file=sys.stderr)
        return 2
    run = resolve_run_arg(words[0])
    try:
        if action == "tag":
            edit_run(run, add_tags=words[1:])
        elif action == "untag":
            edit_run(run, remove_tags=words[1:])
        elif action == "note":
            edit_run(run, note=" ".join(words[1:]))
        elif action == "rename":
            edit_run(run, name=" ".join(words[1:]))
        else:
            return _delete(prog, run, yes)
    except (ValueError, RunFileError) as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 1
    info = run_info(run)
    print(f"{info.path}: {info.name}" + (f"  tags: {', '.join(info.tags)}" if info.tags else "")
          + (f"  note: {_short(info.note)}" if info.note else ""))
    return 0


def _delete(prog: str, run: Path, yes: bool) -> int:
    try:
        how = delete_run(run)
    except TrashUnavailable as e:
        if not yes:
            if not sys.stdin.isatty():
                print(f"{prog}: {e.problem}: add --yes to delete {run} permanently", file=sys.stderr)
                return 1
            answer = input(f"{e.problem}.\nDelete {run} permanently? [y/N] ")
            if answer.strip().lower() not in ("y", "yes"):
                print(f"{prog}: kept {run}", file=sys.stderr)
                return 1
        try:
            how = delete_run(run, permanent=True)
        except RunFileError as e2:
            print(f"{prog}: {e2}", file=sys.stderr)
            return 1
    except RunFileError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 1
    print(f"{'moved to the trash' if how == 'trash' else 'deleted'}: {run}")
    return 0


def cmd_export(args) -> int:
    """Export one run; print the files written. Exit 1 with one line on stderr if the
    run cannot be read or the export cannot be written."""
    from ..config import ConfigError
    from ..config.inputs import os_problem
    from ..paths import check_output_dir, resolve_run_arg

    try:
        out = check_output_dir(args.out, "--out", outside_runs=True)
        files = export_run(resolve_run_arg(args.run), args.format, out, progress=_progress)
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


def _progress(text: str) -> None:
    """Progress of long work goes to stderr: stdout stays the command's result."""
    print(f"moe-studio export: {text}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------- formatting
def _info_dict(i: RunInfo, labels: dict[str, str] | None = None) -> dict:
    d = {k: getattr(i, k) for k in i.__dataclass_fields__ if k != "config_items"}
    d["path"] = str(i.path)
    d["tags"] = list(i.tags)
    d["label"] = (labels or {}).get(str(i.path)) or i.name
    d["setup"] = describe_setup(i) if not i.error else None
    # JSON has no NaN: a diverged loss is written as null with the text "nan" beside it
    for k in ("train_loss", "val_loss"):
        if isinstance(d[k], float) and not math.isfinite(d[k]):
            d[k + "_text"] = str(d[k])
            d[k] = None
    return d


def _fmt_loss(v: float | None) -> str:
    return "-" if v is None else f"{v:.4f}"


def _short(text: str | None, n: int = 40) -> str:
    line = " ".join((text or "").split())
    return line if len(line) <= n else line[: n - 1] + "…"


def _short_name(name: str, n: int = 30) -> str:
    """A run name cut to ``n`` characters in its middle: names of one sweep or series
    differ at their end ("sweep-topk-aux top_k=2 aux_loss_coef=0" / "...=0.01"), which
    a cut at the end made read the same."""
    line = " ".join(name.split())
    if len(line) <= n:
        return line
    head = (n - 1) // 3
    return line[:head] + "…" + line[len(line) - (n - 1 - head):]


def _print_table(infos: list[RunInfo], runs_dir, labels: dict[str, str], filtered: bool = False) -> None:
    if not infos:
        print(f"no runs{' matching the filter' if filtered else ''} in {runs_dir}")
        return
    head = ("run", "name", "status", "steps", "train", "val", "setup", "tags", "started", "note")
    rows = []
    for i in infos:
        if i.error:
            rows.append((i.run_id, "", "unreadable", "", "", "", "", "", "", ""))
            continue
        steps = "-" if i.last_step is None or i.last_step < 0 else str(i.last_step)
        if i.total_steps and i.status == "running":
            steps += f"/{i.total_steps}"
        started = time.strftime("%Y-%m-%d %H:%M", time.localtime(i.started)) if i.started else ""
        rows.append((i.run_id, _short_name(labels.get(str(i.path)) or i.name or ""), i.status, steps,
                     _fmt_loss(i.train_loss), _fmt_loss(i.val_loss), describe_setup(i),
                     ",".join(i.tags), started, _short(i.note)))
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
