"""Validation of an experiment config in one place, with messages a person can act on."""
from __future__ import annotations

import os
from dataclasses import Field, fields
from pathlib import Path
from typing import Any

from . import schema
from .legacy import LegacyValueError, upgrade_keys
from .stages import parse_stages


class ConfigError(ValueError):
    """A config problem tied to one field (``path`` such as ``moe.top_k``)."""

    def __init__(self, path: str, message: str):
        # One line, whatever a value or an OS message carried: it is printed as it is.
        message = " ".join(str(message).split())
        super().__init__(message)
        self.path = path
        self.message = message

    def __str__(self) -> str:  # the message already names the field
        return self.message


MAX_NAME = 200


def show(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters: a 401-digit number or a megabyte of
    text must not become a 401-digit error message."""
    try:
        r = repr(value)
    except ValueError:  # an int beyond Python's digit limit for str()
        return f"<a number of about {value.bit_length() * 0.30103:.0f} digits>"
    return r if len(r) <= limit else r[:limit - 1] + "…"


def _type_name(f: Field) -> str:
    t = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    return t


def coerce(path: str, f: Field, value: Any) -> Any:
    """Convert a TOML / CLI / form value to the field's type or raise ConfigError."""
    t = _type_name(f)
    if t == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no", "on", "off"):
            return value.lower() in ("true", "1", "yes", "on")
        raise ConfigError(path, f"{path} must be true or false, got {show(value)}")
    if t == "int":
        if isinstance(value, bool):
            raise ConfigError(path, f"{path} must be a whole number, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip().replace("_", ""))
            except ValueError:
                pass
        raise ConfigError(path, f"{path} must be a whole number, got {show(value)}")
    if t == "float":
        if isinstance(value, bool):
            raise ConfigError(path, f"{path} must be a number, got {show(value)}")
        if isinstance(value, (int, float, str)):
            try:
                x = float(value.strip() if isinstance(value, str) else value)
            except (ValueError, OverflowError):
                x = None
            if x is not None:
                typed_inf = (isinstance(value, float) and value in (float("inf"), -float("inf"))
                             or isinstance(value, str) and "inf" in value.lower())
                if x in (float("inf"), -float("inf")) and not typed_inf:
                    # 1e400 would silently become inf: say so instead
                    raise ConfigError(path, f"{path} is too large to be a number ({show(value)})")
                return x
            if isinstance(value, int):
                raise ConfigError(path, f"{path} is too large to be a number ({show(value)})")
        raise ConfigError(path, f"{path} must be a number, got {show(value)}")
    if t == "str":
        if isinstance(value, (list, tuple)) and path.endswith("moe_layers"):
            # only whole block numbers: [0.5] must not quietly become block 0
            if not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
                raise ConfigError(path, f"{path} as a list must hold block indices (whole "
                                        f"numbers), got {show(value)}")
            return ",".join(str(v) for v in value)
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(path, f"{path} must be text, got {show(value)}")
        return str(value)
    return value


def parse_layer_set(expr: str, n_layers: int) -> list[int]:
    """Indices of the MoE blocks described by ``model.moe_layers``.

    'all', 'none' / '', 'every_other' (1, 3, 5, ...: the Switch / GShard pattern),
    or a comma-separated list of 0-based indices.
    """
    e = expr.strip().lower().replace(" ", "")
    if e == "all":
        return list(range(n_layers))
    if e in ("none", "", "dense"):
        return []
    if e in ("every_other", "everyother", "alternate"):
        return list(range(1, n_layers, 2))
    out: list[int] = []
    for part in e.strip("[]").split(","):
        if not part:
            continue
        try:
            if not (part.isascii() and part.lstrip("-").isdigit()):
                raise ValueError(part)  # int() would also take "1_0" or non-ASCII digits
            i = int(part)
        except ValueError:
            raise ConfigError("model.moe_layers",
                              f"model.moe_layers ({show(expr)}) must be 'all', 'none', 'every_other' "
                              f"or a list of block indices like '1,3'") from None
        if not 0 <= i < n_layers:
            raise ConfigError("model.moe_layers",
                              f"model.moe_layers: block {i} does not exist "
                              f"(model.n_layers is {n_layers}, so indices are 0..{n_layers - 1})")
        if i not in out:
            out.append(i)
    return sorted(out)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return show(v) if isinstance(v, (str, int)) and not isinstance(v, bool) else str(v)


def problems(cfg: "schema.ExperimentConfig") -> list[ConfigError]:
    """Every problem in ``cfg`` (empty list = valid). Ranges first, then combinations."""
    errs = field_problems(cfg)
    if errs:
        return errs
    return _combination_problems(cfg)


def field_problems(cfg: "schema.ExperimentConfig") -> list[ConfigError]:
    """The problems of each value on its own: type, choices, range."""
    errs: list[ConfigError] = []
    if not isinstance(cfg.name, str):
        errs.append(ConfigError("name", f"name must be text, got {show(cfg.name)}"))
    elif len(cfg.name) > MAX_NAME:
        errs.append(ConfigError("name", f"name is {len(cfg.name):,} characters long; "
                                        f"at most {MAX_NAME} fit a run list"))
    for sec_name in schema.SECTIONS:
        sec = getattr(cfg, sec_name)
        for f in fields(sec):
            path = f"{sec_name}.{f.name}"
            v = getattr(sec, f.name)
            md = f.metadata
            try:
                v = coerce(path, f, v)
            except ConfigError as e:
                errs.append(e)
                continue
            if md.get("choices") and v not in md["choices"]:
                errs.append(ConfigError(path, f"{path} ({_fmt(v)}) must be one of: "
                                              f"{', '.join(md['choices'])}"))
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                if v != v:  # NaN
                    errs.append(ConfigError(path, f"{path} must be a number, got NaN"))
                    continue
                if md.get("min") is not None and v < md["min"]:
                    errs.append(ConfigError(path, f"{path} ({_fmt(v)}) must be >= {_fmt(md['min'])}"))
                if md.get("max") is not None and v > md["max"]:
                    errs.append(ConfigError(path, f"{path} ({_fmt(v)}) must be <= {_fmt(md['max'])}"))
    return errs


def _combination_problems(cfg: "schema.ExperimentConfig") -> list[ConfigError]:
    errs: list[ConfigError] = []
    m, e, d, p, t, ens = cfg.model, cfg.moe, cfg.data, cfg.precision, cfg.train, cfg.ensemble
    if m.d_model % m.n_heads:
        errs.append(ConfigError("model.n_heads", f"model.d_model ({m.d_model}) must be divisible by "
                                                 f"model.n_heads ({m.n_heads})"))
    try:
        moe_layers = parse_layer_set(m.moe_layers, m.n_layers)
    except ConfigError as ce:
        errs.append(ce)
        moe_layers = []
    if moe_layers:
        if e.router != "soft" and e.top_k > e.n_experts:
            errs.append(ConfigError("moe.top_k", f"moe.top_k ({e.top_k}) must be <= moe.n_experts "
                                                 f"({e.n_experts})"))
        if e.router == "soft" and e.capacity_factor > 0:
            errs.append(ConfigError("moe.capacity_factor",
                                    "moe.capacity_factor must be 0 with the soft router "
                                    "(every token goes to every expert, nothing can be dropped)"))
        if e.router == "noisy_topk" and e.top_k >= e.n_experts:
            errs.append(ConfigError("moe.top_k", f"moe.top_k ({e.top_k}) must be < moe.n_experts "
                                                 f"({e.n_experts}) for noisy_topk (its load estimate "
                                                 f"needs a (k+1)-th expert)"))
    try:
        stages = parse_stages(t.stages)
    except ValueError as e:
        errs.append(ConfigError("train.stages", str(e)))
    else:
        if stages and stages[-1].end > t.steps:
            errs.append(ConfigError("train.stages", f"train.stages last {stages[-1].end} steps, "
                                                    f"more than train.steps ({t.steps})"))
    if t.min_lr > t.lr:
        errs.append(ConfigError("train.min_lr", f"train.min_lr ({t.min_lr:g}) must be <= "
                                                f"train.lr ({t.lr:g})"))
    if t.warmup_steps > t.steps:
        errs.append(ConfigError("train.warmup_steps", f"train.warmup_steps ({t.warmup_steps}) must "
                                                      f"be <= train.steps ({t.steps})"))
    if ens.method in ("snapshot", "boosting") and ens.members > 1 and t.steps < ens.members:
        # members train one after another, each for at least one step
        errs.append(ConfigError("ensemble.members",
                                f"{ens.method} trains its {ens.members} members one after another: "
                                f"train.steps ({t.steps}) must be >= ensemble.members "
                                f"({ens.members}); raise train.steps or lower ensemble.members"))
    if ens.combine == "samme" and not (ens.method == "boosting" and ens.boost_mode == "samme"):
        errs.append(ConfigError("ensemble.combine", "ensemble.combine samme needs member weights: "
                                                    "set ensemble.method = boosting and "
                                                    "ensemble.boost_mode = samme, or pick another rule"))
    if p.mode == "bf16" and t.device == "mps":
        errs.append(ConfigError("precision.mode", "precision.mode bf16 is not supported on mps; "
                                                  "use fp16 or fp32"))
    if t.lr <= 0:
        errs.append(ConfigError("train.lr", f"train.lr ({t.lr:g}) must be > 0: with no learning "
                                            f"rate the weights never change"))
    errs.extend(_parallel_problems(cfg, moe_layers))
    corpus_problem = _corpus_problem(d.corpus)
    if corpus_problem:
        errs.append(ConfigError("data.corpus", corpus_problem))
    return errs


def parallel_data_size(value: str) -> int | None:
    """``parallel.data`` as a number of ranks; None for 'auto'. ValueError if neither."""
    v = str(value).strip().lower()
    if v == "auto":
        return None
    if not (v.isascii() and v.isdigit()) or int(v) < 1:
        raise ValueError(v)
    return int(v)


def _parallel_problems(cfg: "schema.ExperimentConfig", moe_layers: list[int]) -> list[ConfigError]:
    """What the parallel section gets wrong whatever the world size (the world size
    itself is checked when the ranks start: engine/parallel/layout.py)."""
    par, e = cfg.parallel, cfg.moe
    errs: list[ConfigError] = []
    try:
        parallel_data_size(par.data)
    except ValueError:
        errs.append(ConfigError("parallel.data", f"parallel.data ({show(par.data)}) must be 'auto' "
                                                 f"or a whole number of ranks >= 1"))
    if par.expert > 1:
        if not moe_layers:
            errs.append(ConfigError("parallel.expert", f"parallel.expert ({par.expert}) needs MoE "
                                                       f"blocks, and model.moe_layers is "
                                                       f"{show(cfg.model.moe_layers)}"))
        elif e.n_experts % par.expert:
            errs.append(ConfigError("parallel.expert", f"parallel.expert ({par.expert}) must divide "
                                                       f"moe.n_experts ({e.n_experts})"))
        if e.router == "expert_choice":
            errs.append(ConfigError("parallel.expert", "parallel.expert > 1 does not support "
                                                       "moe.router expert_choice (each expert "
                                                       "would pick among its own rank's tokens)"))
        if e.capacity_factor > 0 and e.top_k > 1 and e.capacity_priority != "token_order":
            errs.append(ConfigError("moe.capacity_priority",
                                    f"parallel.expert > 1 with a capacity counts pairs in token "
                                    f"order: set moe.capacity_priority = 'token_order' (is "
                                    f"{show(e.capacity_priority)}) or moe.capacity_factor = 0"))
        if e.capacity_factor > 0 and e.capacity_group != "batch":
            errs.append(ConfigError("moe.capacity_group",
                                    f"parallel.expert > 1 with a capacity counts it over the "
                                    f"batch: set moe.capacity_group = 'batch' (is "
                                    f"{show(e.capacity_group)}) or moe.capacity_factor = 0"))
    if par.processes > 1:
        spread = member_spread_problem(cfg, par.processes, "parallel.processes")
        if spread is not None:
            errs.append(spread)
    return errs


def member_spread_problem(cfg: "schema.ExperimentConfig", world: int,
                          what: str = "the world size") -> ConfigError | None:
    """What stops ``cfg``'s ensemble from being spread over ``world`` ranks (None: it
    fits, or there is no ensemble). Each rank trains a contiguous block of whole
    members on the whole batch (engine/parallel/members.py), so the members must be
    independent of each other and come in equal blocks."""
    ens, par = cfg.ensemble, cfg.parallel
    if ens.members <= 1 or world <= 1:
        return None
    n = f"{what} ({world})" if what == "parallel.processes" else f"{what} ({world} ranks)"
    if ens.method in ("snapshot", "boosting"):
        why = ("each snapshot continues from the one before it" if ens.method == "snapshot"
               else "each member learns from the errors of the members before it")
        return ConfigError("ensemble.method", f"ensemble.method {ens.method} cannot be spread over "
                                              f"{n}: its members train one after another ({why}); "
                                              f"use seeds or bagging, or train it in one process")
    if par.expert > 1:
        return ConfigError("parallel.expert", f"parallel.expert ({par.expert}) with ensemble.members "
                                              f"({ens.members}) over {n}: the ranks hold whole "
                                              f"members, so parallel.expert must be 1")
    try:
        data = parallel_data_size(par.data)
    except ValueError:
        data = None   # reported on its own
    if data is not None and data != 1:
        return ConfigError("parallel.data", f"parallel.data ({data}) with ensemble.members "
                                            f"({ens.members}) over {n}: each member trains on the "
                                            f"whole batch on one rank; set parallel.data = 'auto'")
    if ens.members % world:
        return ConfigError("ensemble.members", f"ensemble.members ({ens.members}) must be a multiple "
                                               f"of {n}: every rank trains an equal block of whole "
                                               f"members (otherwise the others wait on the busiest)")
    return None


def _corpus_problem(spec: str) -> str | None:
    """What is wrong with ``data.corpus`` that a look at the disk can tell (before a run
    spends seconds starting and then fails on it); the corpus loader checks the rest."""
    spec = spec.strip()
    if not spec:
        return "data.corpus is empty: use 'embedded' or a path"
    if spec == "embedded":
        return None
    try:
        p = Path(spec).expanduser()
        exists = p.exists()
    except RuntimeError:      # ~nosuchuser
        return f"data.corpus: '{spec}' starts with ~ but that user has no home folder"
    except (OSError, ValueError) as e:   # a name too long, a NUL byte
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        shown = spec if len(spec) <= 80 else spec[:80] + "…"
        return f"data.corpus: {shown!r} cannot be a path ({why})"
    if not exists:
        return (f"data.corpus: '{spec}' does not exist (give a text file, a folder of them, "
                f"or 'embedded')")
    if not (p.is_file() or p.is_dir()):
        return f"data.corpus: '{spec}' is neither a file nor a folder"
    if not os.access(p, os.R_OK | (os.X_OK if p.is_dir() else 0)):
        return f"data.corpus: '{spec}' cannot be read (permission denied)"
    return None


def validate(cfg: "schema.ExperimentConfig") -> "schema.ExperimentConfig":
    """Raise the first ConfigError of ``cfg``; return it unchanged when valid."""
    errs = problems(cfg)
    if errs:
        raise errs[0]
    return cfg


def apply_overrides(cfg: "schema.ExperimentConfig", items: list[str]) -> "schema.ExperimentConfig":
    """Apply ``section.key=value`` strings (the CLI's ``--set``) in place."""
    for item in items:
        if "=" not in item:
            raise ConfigError(item, f"--set {item!r}: expected section.key=value")
        key, value = item.split("=", 1)
        key = key.strip()
        if key == "name":
            cfg.name = value
            continue
        if "." not in key:
            raise ConfigError(key, f"--set {key!r}: expected section.key (e.g. moe.top_k)")
        sec_name, k = key.split(".", 1)
        if sec_name not in schema.SECTIONS:
            raise ConfigError(key, f"unknown config section '{sec_name}' "
                                   f"(known: {', '.join(schema.SECTIONS)})")
        sec = getattr(cfg, sec_name)
        known = {f.name: f for f in fields(sec)}
        if k not in known:
            raise ConfigError(key, f"unknown key '{key}' (known in {sec_name}: {', '.join(known)})")
        setattr(sec, k, coerce(key, known[k], value.strip()))
    return cfg


def from_dict(d: dict[str, Any]) -> "schema.ExperimentConfig":
    """Build a config from nested dicts, keeping defaults for missing keys.

    Unknown sections or keys raise ``ConfigError`` naming them; type coercion is
    lenient where no information is lost (int -> float), strict otherwise.
    """
    cfg = schema.ExperimentConfig()
    for key, value in d.items():
        if key == "name":
            if not isinstance(value, str):  # a table or a date must not become its repr
                raise ConfigError("name", f"name must be text in quotes, got {show(value)}")
            cfg.name = value
            continue
        if key not in schema.SECTIONS:
            raise ConfigError(key, f"unknown config section '{key}' "
                                   f"(known: name, {', '.join(schema.SECTIONS)})")
        if not isinstance(value, dict):
            raise ConfigError(key, f"section '{key}' must be a table of key = value pairs")
        sec = getattr(cfg, key)
        known = {f.name: f for f in fields(sec)}
        try:
            value = upgrade_keys(key, value)   # retired keys of older runs' configs
        except LegacyValueError as e:
            raise ConfigError(e.path, str(e)) from None
        for k, v in value.items():
            if k not in known:
                raise ConfigError(f"{key}.{k}", f"unknown key '{key}.{k}' "
                                                f"(known: {', '.join(known)})")
            setattr(sec, k, coerce(f"{key}.{k}", known[k], v))
    return cfg


def copy_config(cfg: "schema.ExperimentConfig") -> "schema.ExperimentConfig":
    """A deep copy through the dict form (what a run records), validated on the way."""
    return from_dict(schema.to_dict(cfg))
