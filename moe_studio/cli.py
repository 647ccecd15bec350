"""``moe-studio`` command line: the app (default), headless training, runs, export,
reports and benchmarks."""
from __future__ import annotations

import argparse
import json
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
    from .config import ConfigError, apply_overrides, default, load, validate
    from .config import presets as presets_mod

    if args.preset:
        # by function name (bagging_ensemble, dashes allowed) or by its PRESETS title
        by_name = {"default": default, **{f.__name__: f for f in presets_mod.PRESETS.values()}}
        by_title = {t.lower(): f for t, f in presets_mod.PRESETS.items()}
        fn = by_name.get(args.preset.lower().replace("-", "_")) or by_title.get(args.preset.lower())
        if fn is None:
            raise ConfigError("", f"unknown preset '{args.preset}' (known: {', '.join(by_name)})")
        cfg = fn()
    elif args.config:
        cfg = load(args.config)
    else:
        cfg = default()
    apply_overrides(cfg, args.set or [])
    if args.steps is not None:
        cfg.train.steps = args.steps
        if cfg.train.warmup_steps > cfg.train.steps:
            cfg.train.warmup_steps = cfg.train.steps // 10
    return validate(cfg)


def cmd_train(args) -> int:
    from .config import ConfigError
    from .data import CorpusError

    try:
        cfg = _load_config(args)
    except ConfigError as e:
        print(f"moe-studio train: {e}", file=sys.stderr)
        return 2
    from .engine.trainer import Trainer

    try:
        trainer = Trainer(cfg, runs_dir=args.out)
    except (CorpusError, ConfigError, ValueError) as e:
        print(f"moe-studio train: {e}", file=sys.stderr)
        return 2
    out = sys.stdout
    p = trainer.params
    print(f"run {trainer.run_id} -> {trainer.run_dir}", file=out)
    print(f"device {trainer.device} · corpus {trainer.corpus.describe()}", file=out)
    print(f"params total {p.total:,} · active/token {p.active:,}"
          + (f" · members {p.members}" if p.members > 1 else ""), file=out)
    stop = {"flag": False}

    def _sigint(signum, frame):
        if stop["flag"]:
            raise KeyboardInterrupt
        stop["flag"] = True
        print("\nstopping after this step (Ctrl+C again to abort)…", file=sys.stderr)

    old = signal.signal(signal.SIGINT, _sigint)
    tty = out.isatty() and not args.quiet
    last_print = 0.0
    info = None
    val = None
    status = "finished"
    try:
        while not trainer.done and not stop["flag"]:
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
        if stop["flag"]:
            status = "stopped"
        trainer.close(status)
    except BaseException as e:
        import traceback
        trainer.close("failed", error=traceback.format_exc())
        if isinstance(e, KeyboardInterrupt):
            print("\naborted", file=sys.stderr)
            return 130
        print(f"\nmoe-studio train: failed: {e}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGINT, old)
    if tty:
        out.write("\n")
    elapsed = time.time() - trainer._t_start
    print(f"{status}: {trainer.step_count} steps in {_fmt_duration(elapsed)}"
          + (f" · final loss {info.loss:.4f}" if info else "")
          + (f" · val loss {val:.4f}" if val is not None else "")
          + f" · run {trainer.run_dir}", file=out)
    return 0 if status in ("finished", "stopped") else 1


def cmd_config(args) -> int:
    from .config import ConfigError, dumps

    try:
        cfg = _load_config(args)
    except ConfigError as e:
        print(f"moe-studio config: {e}", file=sys.stderr)
        return 2
    text = dumps(cfg)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
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
    result = mod.run(json_out=args.json, quick=args.quick)
    if args.json:
        print(json.dumps(result, indent=2))
    return 0


def cmd_gui(args) -> int:
    from .gui.app import main as gui_main

    return gui_main([a for a in [args.path] if a])


def build_parser() -> argparse.ArgumentParser:
    from .paths import default_runs_dir

    ap = argparse.ArgumentParser(prog="moe-studio",
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
                   help=f"runs folder (default: $MOE_STUDIO_RUNS or ./runs; now {default_runs_dir()})")
    t.add_argument("--quiet", action="store_true", help="no progress lines")
    t.set_defaults(func=cmd_train)

    c = sub.add_parser("config", help="print an experiment config as TOML (after --preset / --set)")
    config_args(c)
    c.add_argument("--out", help="write to this file instead of stdout")
    c.set_defaults(func=cmd_config)

    b = sub.add_parser("bench", help="benchmarks (print JSON)")
    b.add_argument("what", choices=["moe-layer", "engine", "store", "gui", "precision", "ensemble", "routing",
                                      "compare", "inspect"])
    b.add_argument("--json", action="store_true", help="print the result as JSON")
    b.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
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
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    if not getattr(args, "func", None):
        args = ap.parse_args(["gui"] + (argv if argv is not None else sys.argv[1:]))
    return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
