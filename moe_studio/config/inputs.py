"""Where what a person types becomes a config, or is refused: config files, presets,
``--set``, ``--steps`` and the paths inside a config. Everything refused raises the one
:class:`ConfigError`, whose message is one line that names the input and the problem.

Reading never blocks and never reads without bound: a config path that is a pipe or a
device is refused before it is opened, and a file larger than
:data:`MAX_CONFIG_BYTES` is refused by its size.
"""
from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Callable

from . import presets as presets_mod
from .schema import ExperimentConfig
from .toml_io import loads
from .validate import ConfigError, apply_overrides, copy_config, field_problems, show, validate

MAX_CONFIG_BYTES = 1 << 20  # a config is a few hundred bytes; a megabyte is not a config


def expand_path(text: str | os.PathLike, what: str) -> Path:
    """``text`` as a Path with ``~`` / ``~user`` expanded; ConfigError naming ``what``
    (a flag, a field or a variable) when the user does not exist or the text cannot be a
    path (a NUL byte)."""
    s = os.fspath(text)
    if "\x00" in s:
        raise ConfigError(what, f"{what}: {show(s)} contains a NUL byte, which no path can hold")
    try:
        return Path(s).expanduser()
    except RuntimeError:  # ~nosuchuser, or ~ without a home folder
        user = s[1:].split("/", 1)[0] or "the current user"
        raise ConfigError(what, f"{what}: {show(s)} starts with ~ but {user} has no home "
                                f"folder (no such user?)") from None


def kind_of(mode: int) -> str:
    """What a file-system entry is, in words (for "X is <kind>, not ...")."""
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISREG(mode):
        return "a file"
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def os_problem(e: OSError) -> str:
    """An OSError in words, without Python's ``[Errno N]`` prefix."""
    return e.strerror or errno.errorcode.get(e.errno or 0, "") or str(e)


def read_config_text(path: str | os.PathLike) -> tuple[Path, str]:
    """``(path, text)`` of a config file: a regular UTF-8 file (a leading byte-order
    mark dropped) of at most MAX_CONFIG_BYTES. ConfigError otherwise."""
    p = expand_path(path, "config file")
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise ConfigError("", f"{p}: config file not found") from None
    except OSError as e:
        raise ConfigError("", f"{p}: cannot read the config file ({os_problem(e)})") from None
    if stat.S_ISDIR(st.st_mode):
        raise ConfigError("", f"{p}: is a folder, expected a .toml config file")
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError("", f"{p}: is {kind_of(st.st_mode)}, expected a .toml config file")
    if st.st_size > MAX_CONFIG_BYTES:
        raise ConfigError("", f"{p}: {st.st_size:,} bytes is too large for a config file "
                              f"(at most {MAX_CONFIG_BYTES:,})")
    try:
        # O_NONBLOCK: were the file swapped for a pipe since the stat, open must not wait
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise ConfigError("", f"{p}: is not a regular file, expected a .toml config file")
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as e:
        raise ConfigError("", f"{p}: cannot read the config file ({os_problem(e)})") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError("", f"{p}: too large for a config file (more than "
                              f"{MAX_CONFIG_BYTES:,} bytes)")
    try:
        return p, raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise ConfigError("", f"{p}: not a UTF-8 text file (byte 0x{raw[e.start]:02x} at "
                              f"offset {e.start}, line {line})") from None


def load(path: str | Path) -> ExperimentConfig:
    """Read a config file; missing keys keep their defaults. Raises ConfigError."""
    p, text = read_config_text(path)
    try:
        return loads(text, str(p))
    except ConfigError as e:
        if e.message.startswith(str(p)):
            raise
        raise ConfigError(e.path, f"{p}: {e.message}") from None


def preset_names() -> list[str]:
    return ["default", *(f.__name__ for f in presets_mod.PRESETS.values())]


def find_preset(name: str) -> ExperimentConfig:
    """The preset called ``name``: its function name (dashes allowed) or its title."""
    by_name = {"default": presets_mod.default,
               **{f.__name__: f for f in presets_mod.PRESETS.values()}}
    by_title = {t.lower(): f for t, f in presets_mod.PRESETS.items()}
    key = name.strip().lower()
    fn = by_name.get(key.replace("-", "_")) or by_title.get(key)
    if fn is None:
        raise ConfigError("--preset", f"unknown preset {show(name)} "
                                      f"(known: {', '.join(preset_names())})")
    return fn()


def build_config(config: str | os.PathLike | None = None, *, preset: str | None = None,
                 sets: list[str] | None = None, steps: int | None = None,
                 note: Callable[[str], None] | None = None) -> ExperimentConfig:
    """The config a command line describes, validated: a config file or a preset (not
    both; neither = the default experiment), then each ``--set``, then ``--steps``.

    ``--steps`` is ``--set train.steps=N``. When it leaves the warm-up longer than the
    run and the warm-up was not set on the command line, the warm-up becomes a tenth of
    the steps and ``note`` is told so (a changed value is never silent); every value is
    range-checked before that, so a warm-up that was wrong to begin with is refused.
    """
    if config is not None and preset is not None:
        raise ConfigError("--preset", f"both a config file ({config}) and --preset "
                                      f"{show(preset)} given: use one (edit the file, or "
                                      "--set values on top of the preset)")
    if preset is not None:
        cfg = find_preset(preset)
    elif config is not None:
        cfg = load(config)
    else:
        cfg = presets_mod.default()
    sets = list(sets or [])
    apply_overrides(cfg, sets)
    errs = field_problems(cfg)
    if errs:
        raise errs[0]
    told = None
    if steps is not None:
        apply_overrides(cfg, [f"train.steps={steps}"])
        errs = field_problems(cfg)
        if errs:
            raise errs[0]
        warmup_set = any(s.split("=", 1)[0].strip() == "train.warmup_steps" for s in sets)
        t = cfg.train
        if t.warmup_steps > t.steps and not warmup_set:
            old, t.warmup_steps = t.warmup_steps, t.steps // 10
            told = (f"--steps {steps}: train.warmup_steps {old} is longer than the run, "
                    f"using {t.warmup_steps} (a tenth); --set train.warmup_steps=N to choose")
    check_input_paths(cfg)
    validate(cfg)
    if told and note is not None:  # only for a config that is then used
        note(told)
    return cfg


def check_processes(cfg: ExperimentConfig, n: int, flag: str) -> int:
    """``n`` local processes asked for by ``flag`` (``train --nproc``), checked as the
    config's ``parallel.processes`` would be (its range, an ensemble's spread over the
    ranks) before a launcher starts that many. ConfigError naming the flag otherwise."""
    probe = copy_config(cfg)
    try:
        apply_overrides(probe, [f"parallel.processes={n}"])
        errs = field_problems(probe)
        if errs:
            raise errs[0]
        validate(probe)
    except ConfigError as e:
        raise ConfigError(flag, f"{flag} {n}: {e}") from None
    return probe.parallel.processes


# The environment variables that choose something, with the values each accepts (the
# code reading them keeps its default for anything else: said here, before any work).
ENV_CHOICES = {
    "MOE_STUDIO_EXPERT_KERNEL": ("auto", "loop", "grouped"),
    "MOE_STUDIO_ENGINE": ("process", "thread"),
    "MOE_STUDIO_NATIVE": ("0", "1"),
    "MOE_STUDIO_COMPILE_BACKEND": ("inductor", "eager", "aot_eager", "cudagraphs"),
}


def check_environment(environ: "os._Environ | dict | None" = None) -> None:
    """ConfigError for a set MOE_STUDIO_* variable whose value would be ignored."""
    env = os.environ if environ is None else environ
    for name, choices in ENV_CHOICES.items():
        value = env.get(name)
        if value is None or value == "":
            continue
        if value.strip().lower() not in choices or (name != "MOE_STUDIO_ENGINE" and value != value.strip().lower()):
            raise ConfigError(name, f"{name}={show(value)}: must be one of {', '.join(choices)} "
                                    "(or unset)")


def check_input_paths(cfg: ExperimentConfig) -> None:
    """Paths inside a config that can be refused without reading them."""
    corpus = cfg.data.corpus.strip()
    if corpus and corpus != "embedded":
        expand_path(corpus, "data.corpus")
