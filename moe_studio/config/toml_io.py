"""TOML load and save for experiment configs (stdlib only)."""
from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from . import schema
from .validate import ConfigError, from_dict


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        if math.isnan(v):
            return "nan"
        r = repr(v)
        return r if ("." in r or "e" in r or "n" in r) else r + ".0"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    s = str(v)
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t") + '"'


def dumps(cfg: "schema.ExperimentConfig") -> str:
    """The config as TOML text: ``name`` then one table per section."""
    d = schema.to_dict(cfg)
    lines = [f"name = {_value(d['name'])}", ""]
    for sec in schema.SECTIONS:
        lines.append(f"[{sec}]")
        for k, v in d[sec].items():
            lines.append(f"{k} = {_value(v)}")
        lines.append("")
    return "\n".join(lines)


def loads(text: str, source: str = "<string>") -> "schema.ExperimentConfig":
    if text.startswith("\ufeff"):  # a byte-order mark some editors write; not TOML
        text = text[1:]
    try:
        d = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError("", f"{source}: not valid TOML: {e}") from None
    except RecursionError:  # tomllib recurses once per nested [ or {
        raise ConfigError("", f"{source}: not valid TOML: arrays or tables nested too deeply") from None
    return from_dict(d)


def save(cfg: "schema.ExperimentConfig", path: str | Path) -> None:
    """Write atomically (temp file + rename) so a crash never leaves half a config."""
    p = Path(path)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(dumps(cfg), encoding="utf-8")
    tmp.replace(p)


def dumps_tables(d: dict) -> str:
    """Nested dicts as TOML text: top-level scalars first, then one table per dict
    value (for run configs that are not experiment configs, e.g. an inspection's)."""
    lines = [f"{k} = {_value(v)}" for k, v in d.items() if not isinstance(v, dict)]
    for sec, body in d.items():
        if isinstance(body, dict):
            lines += ["", f"[{sec}]"] + [f"{k} = {_value(v)}" for k, v in body.items()
                                         if v is not None]
    return "\n".join(lines) + "\n"
