"""Model weights as safetensors: the files the Routing view routes custom text through.

``weights.safetensors`` (shipped by sample runs, fp16) and the live weights a training
engine hands the app on request (full precision, written outside the run folder) share
one layout: every member's ``state_dict`` under a ``member{m}.`` prefix, a tensor that
is tied to an earlier one stored once, and the optimizer step in the metadata. Loading
is :func:`moe_studio.engine.probe.load_model` (safetensors never runs code).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

FORMAT = "moe-studio-weights-1"


def save_weights(models: Iterable, path: str | Path, step: int, half: bool = False) -> Path:
    """Write the members' weights to ``path`` (atomically: a reader never sees half a
    file). ``half``: floating tensors as fp16 (the samples' size budget). Returns the
    path."""
    from safetensors.torch import save_file

    tensors = {}
    for m, model in enumerate(models):
        seen = set()
        for k, v in model.state_dict().items():
            if v.data_ptr() in seen:
                continue
            seen.add(v.data_ptr())
            t = v.detach().cpu()
            if half and t.is_floating_point():
                t = t.half()
            tensors[f"member{m}.{k}"] = t.contiguous()
    path = Path(path)
    tmp = path.with_name(path.name + ".part")
    save_file(tensors, str(tmp), metadata={"format": FORMAT, "step": str(int(step))})
    os.replace(tmp, path)
    return path


def export_weights(run_dir: str | Path, out_dir: str | Path, progress=lambda _t: None) -> list[Path]:
    """``moe-studio export RUN --format safetensors``: the run's newest weights (its
    latest checkpoint, else its ``weights.safetensors``) as ``OUT/weights.safetensors`` in
    full precision, every member under ``member{m}.``, with the run's ``config.toml``
    beside it, so ``probe.load_model(OUT)`` (or any safetensors reader) takes it as it
    is. ValueError (one line) for a run without weights."""
    import shutil

    from .probe import latest_checkpoint, load_model

    run_dir = Path(run_dir)
    ck = latest_checkpoint(run_dir)
    if ck is None:
        raise ValueError(f"{run_dir}: the run kept no weights (no checkpoint-*.pt, no "
                         "weights.safetensors) to export")
    model, cfg, _ = load_model(run_dir, ck, member=0)
    models = [model]
    for m in range(1, cfg.ensemble.members):
        models.append(load_model(run_dir, ck, member=m)[0])
        progress(f"read member {m + 1}/{cfg.ensemble.members} from {ck.path.name}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [save_weights(models, out_dir / "weights.safetensors", ck.step)]
    shutil.copyfile(run_dir / "config.toml", out_dir / "config.toml")
    written.append(out_dir / "config.toml")
    progress(f"{ck.label} of {len(models)} member{'s' if len(models) != 1 else ''} written")
    return written


def add_safetensors_export(export_parser) -> None:
    """Teach the ``export`` command (store/cli.py, which may not import the engine) the
    ``safetensors`` format: the run's weights rather than its records."""
    from ..config import ConfigError
    from ..paths import check_output_dir, resolve_run_arg

    fmt = next(a for a in export_parser._actions if a.dest == "format")
    fmt.choices = (*fmt.choices, "safetensors")
    fmt.help = "file format (default: csv); safetensors: the run's weights"
    records = export_parser.get_default("func")

    def cmd(args) -> int:
        import sys

        if args.format != "safetensors":
            return records(args)
        try:
            out = check_output_dir(args.out, "--out", outside_runs=True)
            files = export_weights(resolve_run_arg(args.run), out, progress=lambda t: print(
                f"moe-studio export: {t}", file=sys.stderr, flush=True))
        except (ConfigError, ValueError, OSError) as e:
            print(f"moe-studio export: {' '.join(str(e).split())}", file=sys.stderr)
            return 1
        for f in files:
            print(f)
        return 0
    export_parser.set_defaults(func=cmd)
