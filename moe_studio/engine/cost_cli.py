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

    s = sub.add_parser("sample", help="generate text from a trained run and print its speed "
                                      "(tokens/s, latency per token)")
    s.add_argument("run", type=Path, help="run folder with a checkpoint or weights.safetensors")
    s.add_argument("--prompt", default="The ", help="text to continue (default 'The ')")
    s.add_argument("--tokens", type=int, default=200, help="bytes to generate (default 200)")
    s.add_argument("--temperature", type=float, default=0.8, help="0 = greedy (default 0.8)")
    s.add_argument("--top-k", type=int, default=0, help="sample among the k likeliest (0: all)")
    s.add_argument("--member", type=int, default=None, metavar="N",
                   help="sample ensemble member N alone (default: an ensemble run samples "
                        "the ensemble under its combination rule, ensemble.combine)")
    s.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    s.add_argument("--checkpoint", default=None, help="weight file (default: the latest)")
    s.add_argument("--device", default="cpu", help="cpu, cuda, mps or auto (default cpu)")
    s.add_argument("--json", action="store_true", help="print the result as JSON")
    s.set_defaults(func=cmd_sample)


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
    notes: list[str] = []
    try:
        cfg = build_config(args.config, preset=args.preset, sets=args.set or [], steps=args.steps,
                           note=notes.append)
        from .memory import check_fits
        check_fits(cfg)  # measuring builds the model: what cannot fit is refused first
    except ConfigError as e:
        print(f"moe-studio memory: {e}", file=sys.stderr)
        return 2
    for text in notes:
        print(f"moe-studio: {text}", file=sys.stderr)
    from .precision_memory import format_table, measure_modes
    result = measure_modes(cfg, modes)
    print(json.dumps(result, indent=2) if args.json else format_table(result))
    return 0


def cmd_sample(args) -> int:
    from .generate import sample_run

    try:
        g = sample_run(args.run, args.prompt, args.tokens, checkpoint=args.checkpoint,
                       member=args.member, temperature=args.temperature, top_k=args.top_k,
                       seed=args.seed, device=args.device)
    except (ValueError, OSError) as e:
        print(f"moe-studio sample: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(g.as_dict()))
        return 0
    sp = g.speed()
    print(g.prompt + g.text)
    print(f"-- {g.sampled}: {sp['tokens']} tokens in {sp['total_s']:.3f} s: "
          f"{sp['tokens_per_s']:,.1f} tokens/s, "
          f"latency per token median {1e3 * sp['latency_median_s']:.2f} ms, "
          f"p90 {1e3 * sp['latency_p90_s']:.2f} ms, first {1e3 * sp['first_token_s']:.2f} ms "
          f"({g.device}, {g.checkpoint}; no KV cache: each token re-reads the context)")
    return 0
