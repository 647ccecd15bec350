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


def _load_config(args, note=None) -> "object":
    """The validated config of a ``train`` / ``config`` command line (ConfigError if not).
    ``note`` receives what the command line changed beyond what was typed (default: said
    on stderr at once)."""
    from .config.inputs import build_config

    return build_config(args.config, preset=args.preset, sets=args.set or [], steps=args.steps,
                        note=note or (lambda text: print(f"moe-studio: {text}", file=sys.stderr)))


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

    # SIGHUP (the terminal closed, or the parent died: a sweep's runs get it then) stops
    # the same way but never escalates: one death can deliver it more than once (the
    # kernel sends the parent-death signal at each re-parenting, thread by thread).
    SIGNALS = tuple(s for s in (getattr(signal, "SIGINT", None), getattr(signal, "SIGTERM", None),
                                getattr(signal, "SIGHUP", None)) if s is not None)

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
        if self.signum is not None and signum == getattr(signal, "SIGHUP", None):
            return
        if self.signum is not None:
            _say(f"\n{name} again: exiting now; the run will read as interrupted")
            os._exit(128 + signum)
        self.signum = signum
        _say(f"\n{name}: stopping after this step and saving a checkpoint"
             + ("" if signum == getattr(signal, "SIGHUP", None) else f" ({name} again to exit at once)"))


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
    from .config.inputs import check_environment, check_processes
    from .paths import check_output_dir, default_runs_dir

    prog = "moe-studio train"
    if getattr(args, "resume", None):
        return _cmd_resume(args)
    with _SignalStop() as stop:  # from the start: Ctrl+C while checking is no traceback
        notes: list[str] = []  # said once every check passed: a refusal stays one line
        try:
            check_environment()
            cfg = _load_config(args, note=notes.append)
            nproc = (cfg.parallel.processes if args.nproc is None
                     else check_processes(cfg, args.nproc, "--nproc"))
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
        for text in notes:
            _say(f"moe-studio: {text}")
        if stop.requested:  # nothing was made yet: nothing to stop
            return 128 + stop.signum
        if nproc > 1 and "WORLD_SIZE" not in os.environ:
            return _launch(nproc, args, stop)
        return _train(cfg, runs_dir, args, stop)


def _launch(nproc: int, args, stop: "_SignalStop") -> int:
    """``--nproc N`` (or parallel.processes): the same command on N ranks, started by
    torch.distributed.run; its exit status."""
    from .engine.parallel.launch import launch

    again = [a for a in [args.config] if a]
    for flag, value in (("--preset", args.preset), ("--steps", args.steps), ("--out", args.out)):
        if value is not None:
            again += [flag, str(value)]
    for item in args.set or []:
        again += ["--set", item]
    if args.quiet:
        again.append("--quiet")
    stop.__exit__(None, None, None)   # the launcher forwards signals from here on
    return launch(nproc, again)


def _cmd_resume(args) -> int:
    """``train --resume RUN [--steps N]``: continue a run from its newest checkpoint."""
    from .config import ConfigError
    from .config.inputs import check_environment
    from .engine.resume import ResumeError, ResumeRequest, plan_resume

    prog = "moe-studio train"
    extra = [flag for flag, given in (("CONFIG", args.config), ("--preset", args.preset),
                                      ("--set", args.set), ("--out", args.out)) if given]
    if extra:
        print(f"{prog}: --resume continues a run with its own config and folder; "
              f"drop {', '.join(extra)}", file=sys.stderr)
        return 2
    with _SignalStop() as stop:
        try:
            check_environment()
            plan = plan_resume(args.resume, args.steps)
        except (ConfigError, ResumeError) as e:
            print(f"{prog}: {e}", file=sys.stderr)
            return 2
        print(f"{prog}: {plan.describe()}", file=sys.stderr)
        if stop.requested:
            return 128 + stop.signum
        from .engine.resume import resume_trainer
        request = ResumeRequest(str(plan.run_dir), args.steps)
        return _train(None, plan.run_dir.parent, args, stop, make=lambda: resume_trainer(request))


def _train(cfg, runs_dir: Path, args, stop: "_SignalStop", make=None) -> int:
    from .config import ConfigError
    from .data import CorpusError
    from .engine.resume import ResumeError
    from .engine.trainer import Trainer
    from .store import RunFileError

    prog = "moe-studio train"
    try:
        trainer = make() if make is not None else Trainer(cfg, runs_dir=runs_dir)
    except (CorpusError, ConfigError, RunFileError, ResumeError, ValueError) as e:
        print(f"{prog}: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except OSError as e:
        from .config.inputs import os_problem
        where = f" ({e.filename})" if e.filename else ""
        print(f"{prog}: cannot create the run in {runs_dir}: {os_problem(e)}{where}", file=sys.stderr)
        return 1
    if getattr(args, "sweep_tag", None):
        trainer.writer.set_meta(sweep=json.loads(args.sweep_tag))
    # The ranks of a distributed run all train; rank 0 speaks for them.
    ranks = trainer.ranks
    out = sys.stdout if ranks is None or ranks.rank == 0 else open(os.devnull, "w")
    if ranks is not None:
        prog += f" (rank {ranks.rank} of {ranks.world})"
        print(f"ranks {ranks.layout.describe()} · backend {ranks.meta()['backend']}", file=out)
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
        while not trainer.done and not _agreed_stop(trainer, stop):
            info = trainer.step()
            if ranks is not None:
                ranks.test_fault(info.step)
            if info.val_loss is not None:
                val = info.val_loss
            now = time.time()
            if info.val_loss is not None or trainer.done or now - last_print >= (0.25 if tty else 5.0):
                last_print = now
                pct = 100.0 * info.step / info.total_steps
                line = (f"step {info.step:>6}/{info.total_steps} ({pct:5.1f}%) loss {info.loss:.4f}"
                        + (f" val {val:.4f}" if val is not None else "")
                        + f" · {info.tokens_per_s:,.0f} tok/s · ETA {_fmt_duration(info.eta_s)}")
                try:
                    if args.quiet:
                        pass
                    elif tty:
                        out.write("\r" + line + "\x1b[K")
                        if info.val_loss is not None:
                            out.write("\n")
                        out.flush()
                    else:
                        print(line, file=out, flush=True)
                except OSError:
                    # whoever read the progress is gone (a closed pipe or terminal):
                    # training goes on without it
                    args.quiet, tty, out = True, False, open(os.devnull, "w")
        if not trainer.done:
            status = "stopped"
        trainer.close(status)
    except BaseException as e:  # noqa: BLE001  Ctrl+C and SystemExit too: the run is closed with its status
        import traceback
        tb = traceback.format_exc()
        what = _describe_failure(e)
        if ranks is not None:
            what = ranks.explain_failure(what)
            tb = f"{what}\n\n{tb}"
        trainer.close("failed", error=tb)
        print(f"\n{prog}: failed in step {trainer.step_count + 1}: {what}"
              f" (traceback stored in the run)", file=sys.stderr)
        return 1
    finally:
        if ranks is not None:
            from .engine.parallel.process_group import destroy_process_group
            destroy_process_group()
    if tty:
        out.write("\n")
    failure = trainer.writer.failure
    if failure:
        print(f"{prog}: {failure}", file=sys.stderr)
    elapsed = time.time() - trainer._t_start
    try:
        print(f"{status}: {trainer.step_count} steps in {_fmt_duration(elapsed)}"
              + (f" · final loss {info.loss:.4f}" if info else "")
              + (f" · val loss {val:.4f}" if val is not None else "")
              + f" · run {trainer.run_dir}", file=out, flush=True)
    except OSError:
        pass   # nobody reads it any more; the run itself is complete
    if failure:
        return 1
    if stop.requested:
        return 128 + stop.signum
    return 0 if status in ("finished", "stopped") else 1


def _agreed_stop(trainer, stop: "_SignalStop") -> bool:
    """Whether to stop now: one process asks its signal handler; the ranks of a
    distributed run stop together, after the same step, when any of them was asked."""
    if trainer.ranks is None:
        return stop.requested
    return trainer.ranks.between_steps(stop.requested)


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
    t0 = time.time()
    print(f"moe-studio bench {args.what}: running (progress here on stderr; the result on stdout)",
          file=sys.stderr, flush=True)
    from .bench._common import Unavailable
    try:
        result = mod.run(json_out=args.json, quick=args.quick, **kwargs)
    except (FileNotFoundError, Unavailable) as e:   # input data missing, or no GPU
        print(f"moe-studio bench {args.what}: {e}", file=sys.stderr)
        return 2
    print(f"moe-studio bench {args.what}: done in {_fmt_duration(time.time() - t0)}",
          file=sys.stderr, flush=True)
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
    from .paths import resolve_run_arg
    return gui_main(["moe-studio"] + [str(resolve_run_arg(a)) for a in [args.path] if a])


class _Parser(argparse.ArgumentParser):
    """argparse with its refusals in the one-line form of every other input error."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: {' '.join(message.split())} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="moe-studio",
                                 description="See inside Mixture-of-Experts language models while they train.")
    sub = ap.add_subparsers(dest="command")

    g = sub.add_parser("gui", help="open the app (the default with no command)")
    g.add_argument("path", nargs="?", help="a run folder, a sample run's name, or a config .toml to open")
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
    t.add_argument("--nproc", type=int, default=None, metavar="N",
                   help="train on N local processes (torch.distributed.run; default: "
                        "parallel.processes). On a cluster: torchrun ... -m moe_studio train")
    t.add_argument("--resume", metavar="RUN", default=None,
                   help="continue this stopped or interrupted run from its newest checkpoint "
                        "(with --steps N: train to step N, also past the planned steps)")
    t.add_argument("--sweep-tag", default=None, help=argparse.SUPPRESS)  # JSON: the run's sweep
    t.set_defaults(func=cmd_train)

    c = sub.add_parser("config", help="print an experiment config as TOML (after --preset / --set)")
    config_args(c)
    c.add_argument("--out", help="write to this file instead of stdout")
    c.set_defaults(func=cmd_config)

    b = sub.add_parser("bench", help="benchmarks (print JSON)")
    b.add_argument("what", choices=["moe-layer", "engine", "store", "gui", "precision", "ensemble", "routing",
                                      "compare", "inspect", "distributed", "time-to-quality", "gpu"])
    b.add_argument("--json", action="store_true", help="print the result as JSON")
    b.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    b.add_argument("--steps", type=int, default=None,
                   help="training steps, for the benchmarks that train (gui: a short run)")
    b.set_defaults(func=cmd_bench)

    from .engine.cost_cli import add_parsers as add_cost_parsers
    add_cost_parsers(sub, config_args)
    from .engine.inspection.cli import add_parser as add_inspect_parser
    add_inspect_parser(sub)
    from .sweep.cli import add_parser as add_sweep_parser
    add_sweep_parser(sub)

    try:
        from .store.cli import add_parsers as add_store_parsers
        add_store_parsers(sub)
        from .engine.weights import add_safetensors_export
        add_safetensors_export(sub.choices["export"])
        from .sweep.cli import add_sweep_listing
        add_sweep_listing(sub.choices["runs"])
    except ImportError:
        pass
    try:
        from .gui.commands.report import add_parser as add_report_parser
        add_report_parser(sub)
    except ImportError:
        pass
    try:
        from .gui.commands.screenshots import add_parser as add_screenshots_parser
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
