"""``moe-studio`` command line: the app (default), headless training, runs, export,
reports and benchmarks."""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path


def _fmt_duration(s: float) -> str:
    if s != s or s == float("inf"):
        return "--:--"
    s = int(round(s))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m:02d}:{sec:02d}"


def _load_config(args) -> "object":
    """The validated config of a ``train`` / ``config`` command line (ConfigError if not)."""
    from .config.inputs import build_config

    return build_config(args.config, preset=args.preset, sets=args.set or [], steps=args.steps,
                        note=lambda text: print(f"moe-studio: {text}", file=sys.stderr))


def _describe_failure(e: BaseException) -> str:
    """An exception from inside a step as one line ("failed: 3" says nothing)."""
    if isinstance(e, SystemExit):
        return f"the step called sys.exit({e.code!r})"
    text = " ".join(str(e).split())
    if len(text) > 300:
        text = text[:299] + "…"
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


class _SignalStop:
    """SIGINT (Ctrl+C) and SIGTERM (``kill``, schedulers, systemd) ask training to stop
    after the current step: the run is checkpointed, marked stopped, and the command
    exits with 128 + the signal's number. A second signal exits at once: the writer's
    background commits have at most ~0.4 s of records in memory, and the run, left
    'running' by a process that is gone, reads as interrupted."""

    SIGNALS = tuple(s for s in (getattr(signal, "SIGINT", None), getattr(signal, "SIGTERM", None))
                    if s is not None)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, object] = {}

    def __enter__(self) -> "_SignalStop":
        for s in self.SIGNALS:
            try:
                self._old[s] = signal.signal(s, self._handle)
            except ValueError:  # not the main thread (main() called from a thread)
                break
        return self

    def __exit__(self, *exc) -> None:
        if self.signum is not None:
            return  # stopping: a second signal until the process ends still exits at once
        for s, h in self._old.items():
            signal.signal(s, h)

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if self.signum is not None:
            _say(f"\n{name} again: exiting now; the run will read as interrupted")
            os._exit(128 + signum)
        self.signum = signum
        _say(f"\n{name}: stopping after this step and saving a checkpoint "
             f"({name} again to exit at once)")


def _say(text: str) -> None:
    """Print from a signal handler: a closed terminal or pipe must not turn the stop
    into an exception inside whatever the step was doing."""
    try:
        sys.stdout.flush()
        print(text, file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


def cmd_train(args) -> int:
    from .config import ConfigError
    from .config.inputs import check_environment
    from .paths import check_output_dir, default_runs_dir

    prog = "moe-studio train"
    with _SignalStop() as stop:  # from the start: Ctrl+C while checking is no traceback
        try:
            check_environment()
            cfg = _load_config(args)
            if args.out is not None:
                runs_dir = check_output_dir(args.out, "--out")
            else:
                runs_dir = check_output_dir(default_runs_dir(), "MOE_STUDIO_RUNS" if
                                            os.environ.get("MOE_STUDIO_RUNS") else "runs folder ./runs")
            from .engine.memory import check_fits
            check_fits(cfg)
        except ConfigError as e:
            print(f"{prog}: {e}", file=sys.stderr)
            return 2
        if stop.requested:  # nothing was made yet: nothing to stop
            return 128 + stop.signum
        return _train(cfg, runs_dir, args, stop)


def _train(cfg, runs_dir: Path, args, stop: "_SignalStop") -> int:
    from .config import ConfigError
    from .data import CorpusError
    from .engine.trainer import Trainer
    from .store import RunFileError

    prog = "moe-studio train"
    try:
        trainer = Trainer(cfg, runs_dir=runs_dir)
    except (CorpusError, ConfigError, RunFileError, ValueError) as e:
        print(f"{prog}: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except OSError as e:
        from .config.inputs import os_problem
        where = f" ({e.filename})" if e.filename else ""
        print(f"{prog}: cannot create the run in {runs_dir}: {os_problem(e)}{where}", file=sys.stderr)
        return 1
    out = sys.stdout
    p = trainer.params
    print(f"run {trainer.run_id} -> {trainer.run_dir}", file=out)
    print(f"device {trainer.device} · corpus {trainer.corpus.describe()}", file=out)
    print(f"params total {p.total:,} · active/token {p.active:,}"
          + (f" · members {p.members}" if p.members > 1 else ""), file=out)
    tty = out.isatty() and not args.quiet
    last_print = 0.0
    info = None
    val = None
    status = "finished"
    try:
        while not trainer.done and not stop.requested:
            info = trainer.step()
            if info.val_loss is not None:
                val = info.val_loss
            now = time.time()
            if info.val_loss is not None or trainer.done or now - last_print >= (0.25 if tty else 5.0):
                last_print = now
                pct = 100.0 * info.step / info.total_steps
                line = (f"step {info.step:>6}/{info.total_steps} ({pct:5.1f}%) loss {info.loss:.4f}"
                        + (f" val {val:.4f}" if val is not None else "")
                        + f" · {info.tokens_per_s:,.0f} tok/s · ETA {_fmt_duration(info.eta_s)}")
                if args.quiet:
                    pass
                elif tty:
                    out.write("\r" + line + "\x1b[K")
                    if info.val_loss is not None:
                        out.write("\n")
                    out.flush()
                else:
                    print(line, file=out, flush=True)
        if stop.requested:
            status = "stopped"
        trainer.close(status)
    except BaseException as e:
        import traceback
        trainer.close("failed", error=traceback.format_exc())
        print(f"\n{prog}: failed in step {trainer.step_count + 1}: {_describe_failure(e)}"
              f" (traceback stored in the run)", file=sys.stderr)
        return 1
    if tty:
        out.write("\n")
    failure = trainer.writer.failure
    if failure:
        print(f"{prog}: {failure}", file=sys.stderr)
    elapsed = time.time() - trainer._t_start
    print(f"{status}: {trainer.step_count} steps in {_fmt_duration(elapsed)}"
          + (f" · final loss {info.loss:.4f}" if info else "")
          + (f" · val loss {val:.4f}" if val is not None else "")
          + f" · run {trainer.run_dir}", file=out)
    if failure:
        return 1
    if stop.requested:
        return 128 + stop.signum
    return 0 if status in ("finished", "stopped") else 1


def cmd_config(args) -> int:
    from .config import ConfigError, dumps

    try:
        cfg = _load_config(args)
        if args.out:
            from .paths import check_output_file
            out = check_output_file(args.out, "--out")
    except ConfigError as e:
        print(f"moe-studio config: {e}", file=sys.stderr)
        return 2
    text = dumps(cfg)
    if args.out:
        from .config import save
        from .config.inputs import os_problem
        try:
            save(cfg, out)
        except OSError as e:
            print(f"moe-studio config: cannot write {out}: {os_problem(e)}", file=sys.stderr)
            return 1
    else:
        sys.stdout.write(text)
    return 0


def cmd_bench(args) -> int:
    import importlib

    mod_name = args.what.replace("-", "_")
    try:
        mod = importlib.import_module(f".bench.{mod_name}", __package__)
    except ModuleNotFoundError:
        print(f"moe-studio bench: unknown benchmark '{args.what}'", file=sys.stderr)
        return 2
    kwargs = {}
    if args.steps is not None:
        import inspect
        if "steps" not in inspect.signature(mod.run).parameters:
            print(f"moe-studio bench: {args.what} has no --steps", file=sys.stderr)
            return 2
        if args.steps < 1:
            print(f"moe-studio bench: --steps must be at least 1 (got {args.steps})",
                  file=sys.stderr)
            return 2
        kwargs["steps"] = args.steps
    try:
        result = mod.run(json_out=args.json, quick=args.quick, **kwargs)
    except FileNotFoundError as e:   # a benchmark's input data is missing
        print(f"moe-studio bench {args.what}: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, indent=2))
    return 0


def cmd_gui(args) -> int:
    from .config import ConfigError
    from .config.inputs import check_environment

    try:
        check_environment()
    except ConfigError as e:
        print(f"moe-studio: {e}", file=sys.stderr)
        return 2
    from .gui.app import main as gui_main

    # main() reads argv as sys.argv does: the program first, then the arguments.
    return gui_main(["moe-studio"] + [a for a in [args.path] if a])


class _Parser(argparse.ArgumentParser):
    """argparse with its refusals in the one-line form of every other input error."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: {' '.join(message.split())} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="moe-studio",
                                 description="See inside Mixture-of-Experts language models while they train.")
    sub = ap.add_subparsers(dest="command")

    g = sub.add_parser("gui", help="open the app (the default with no command)")
    g.add_argument("path", nargs="?", help="a run folder or a config .toml to open")
    g.set_defaults(func=cmd_gui)

    def config_args(p):
        p.add_argument("config", nargs="?", help="experiment config (.toml); default: the embedded default experiment")
        p.add_argument("--preset", help="start from a named preset instead (e.g. switch_top1)")
        p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                       help="override one config value (repeatable), e.g. --set moe.top_k=1")
        p.add_argument("--steps", type=int, help="shorthand for --set train.steps=N")

    t = sub.add_parser("train", help="train an experiment headless; the app can follow it live")
    config_args(t)
    t.add_argument("--out", type=Path, default=None,
                   help="runs folder (default: $MOE_STUDIO_RUNS or ./runs)")
    t.add_argument("--quiet", action="store_true", help="no progress lines")
    t.set_defaults(func=cmd_train)

    c = sub.add_parser("config", help="print an experiment config as TOML (after --preset / --set)")
    config_args(c)
    c.add_argument("--out", help="write to this file instead of stdout")
    c.set_defaults(func=cmd_config)

    b = sub.add_parser("bench", help="benchmarks (print JSON)")
    b.add_argument("what", choices=["moe-layer", "engine", "store", "gui", "precision", "ensemble", "routing",
                                      "compare", "inspect", "time-to-quality"])
    b.add_argument("--json", action="store_true", help="print the result as JSON")
    b.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    b.add_argument("--steps", type=int, default=None,
                   help="training steps, for the benchmarks that train (gui: a short run)")
    b.set_defaults(func=cmd_bench)

    from .engine.inspection.cli import add_parser as add_inspect_parser
    add_inspect_parser(sub)

    try:
        from .store.cli import add_parsers as add_store_parsers
        add_store_parsers(sub)
    except ImportError:
        pass
    try:
        from .gui.report_cli import add_parser as add_report_parser
        add_report_parser(sub)
    except ImportError:
        pass
    try:
        from .gui.screenshots_cli import add_parser as add_screenshots_parser
        add_screenshots_parser(sub)
    except ImportError:
        pass
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    if not getattr(args, "func", None):
        args = ap.parse_args(["gui"] + (argv if argv is not None else sys.argv[1:]))
    return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
