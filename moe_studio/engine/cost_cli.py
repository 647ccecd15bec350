"""``moe-studio memory`` (the memory split under each precision mode) and
``moe-studio sample`` (text and generation speed of a trained run)."""
from __future__ import annotations

import json
import sys
from pathlib import Path


def add_parsers(sub, config_args) -> None:
    """Register ``memory`` and ``sample`` on an argparse subparsers object;
    ``config_args(parser)`` adds the config/--preset/--set/--steps arguments."""
    m = sub.add_parser("memory", help="measured memory of one training step (parameters, "
                                      "gradients, optimizer state, activations) per precision mode")
    config_args(m)
    m.add_argument("--modes", default="fp32,bf16,fp16",
                   help="comma-separated precision modes to compare (default fp32,bf16,fp16)")
    m.add_argument("--json", action="store_true", help="print JSON instead of a table")
    m.set_defaults(func=cmd_memory)


def cmd_memory(args) -> int:
    from ..config import ConfigError
    from ..config.inputs import build_config
    from ..config.schema import PRECISIONS

    modes = [s.strip() for s in args.modes.split(",") if s.strip()]
    bad = [s for s in modes if s not in PRECISIONS]
    if bad or not modes:
        print(f"moe-studio memory: --modes: unknown precision mode {', '.join(bad) or '(none)'} "
              f"(known: {', '.join(PRECISIONS)})", file=sys.stderr)
        return 2
    try:
        cfg = build_config(args.config, preset=args.preset, sets=args.set or [], steps=args.steps,
                           note=lambda text: print(f"moe-studio: {text}", file=sys.stderr))
    except ConfigError as e:
        print(f"moe-studio memory: {e}", file=sys.stderr)
        return 2
    from .precision_memory import format_table, measure_modes
    result = measure_modes(cfg, modes)
    print(json.dumps(result, indent=2) if args.json else format_table(result))
    return 0
