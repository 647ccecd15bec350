"""list_runs: one summary line per run folder, for the runs panel and ``moe-studio runs``."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import RunFileError
from .reader import RunReader
from .schema import CONFIG_NAME, DB_NAME, wal_path

# (RunInfo field, config section, key) shown next to every run
KEY_CONFIG = (("router", "moe", "router"), ("n_experts", "moe", "n_experts"),
              ("top_k", "moe", "top_k"), ("precision", "precision", "mode"),
              ("members", "ensemble", "members"), ("moe_layers", "model", "moe_layers"))


@dataclass(frozen=True)
class RunInfo:
    """Summary of one run folder.

    A folder that cannot be read has ``status == "unreadable"`` and ``error`` set to
    the one-line problem; its other fields are None. (A run that *failed* is readable:
    its own error text is ``run_error``.) ``train_loss`` / ``val_loss`` are
    the last recorded ``train/loss`` / ``val/loss`` (nats/token): the run-wide value
    (member -1, e.g. an ensemble's) where there is one, else the mean over members.
    """
    path: Path
    run_id: str
    name: str | None = None
    status: str | None = None
    started: float | None = None
    ended: float | None = None
    last_step: int | None = None
    train_loss: float | None = None
    val_loss: float | None = None
    router: str | None = None
    n_experts: int | None = None
    top_k: int | None = None
    precision: str | None = None
    members: int | None = None
    moe_layers: str | None = None   # "none" for a dense model
    error: str | None = None
    total_steps: int | None = None  # the steps it aims at (planned_steps)
    run_error: str | None = None    # the error text a failed run recorded (its traceback)
    tags: tuple[str, ...] = ()
    note: str | None = None
    sweep: tuple[str, ...] = ()     # the sweep it belongs to: its folder name and its name
    # every config value as ("section.key", value), for filters such as moe.top_k=2
    config_items: tuple[tuple[str, Any], ...] = ()

    @property
    def key_config(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k, _, _ in KEY_CONFIG}

    @property
    def dense(self) -> bool:
        """A model without MoE layers (its router settings are unused)."""
        return self.moe_layers is not None and str(self.moe_layers).strip().lower() == "none"


def describe_setup(info: RunInfo) -> str:
    """``"topk k2 · 8 experts · bf16 · 3 members"`` from a run's key config fields
    (``"dense · fp32"`` for a model without MoE layers: its router settings are unused)."""
    parts = []
    if info.dense:
        parts.append("dense")
    elif info.router:
        parts.append(info.router + (f" k{info.top_k}" if info.top_k and info.router != "soft"
                                    else ""))
    if info.n_experts and not info.dense:
        parts.append(f"{info.n_experts} experts")
    if info.precision:
        parts.append(str(info.precision))
    if info.members and info.members > 1:
        parts.append(f"{info.members} members")
    return " · ".join(parts)


def _sweep_of(meta: Any) -> tuple[str, ...]:
    """``(folder name, name)`` of the sweep a run was started by (its meta ``sweep``)."""
    sw = meta.get("sweep") if isinstance(meta, dict) else None
    if not isinstance(sw, dict):
        return ()
    return tuple(dict.fromkeys(str(sw[k]) for k in ("id", "name") if sw.get(k)))


def planned_steps(config: Any, meta: Any) -> int | None:
    """The steps a run aims at: those of its latest continuation (a run continued with
    more steps than its config's), else its trainer's (meta ``total_steps``), else its
    config's ``train.steps``; None for a run that trains nothing (an inspection)."""
    meta = meta if isinstance(meta, dict) else {}
    attempts = meta.get("attempts")
    total = attempts[-1].get("total_steps") if isinstance(attempts, list) and attempts \
        and isinstance(attempts[-1], dict) else None
    if total is None:
        total = meta.get("total_steps")
    if total is None and isinstance(config, dict):
        total = (config.get("train") or {}).get("steps")
    try:
        return int(total) if total else None
    except (TypeError, ValueError):
        return None


def display_labels(infos: list[RunInfo]) -> dict[str, str]:
    """``{path: "name #k"}`` for runs that share a name, numbered in the order they
    started, so rows (and what is compared) are told apart by more than a date. Runs
    with a name of their own are absent."""
    by_name: dict[str, list[RunInfo]] = {}
    for info in infos:
        if not info.error:
            by_name.setdefault(info.name or info.path.name, []).append(info)
    labels = {}
    for name, same in by_name.items():
        if len(same) > 1:
            same.sort(key=lambda i: (i.started if isinstance(i.started, (int, float))
                                     and i.started == i.started else float("inf"), i.run_id))
            for k, info in enumerate(same, 1):
                labels[str(info.path)] = f"{name} #{k}"
    return labels


def _flatten(cfg: dict, prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    for k, v in cfg.items():
        if isinstance(v, dict):
            out += _flatten(v, f"{prefix}{k}.")
        else:
            out.append((f"{prefix}{k}", tuple(v) if isinstance(v, list) else v))
    return out


def looks_like_run(folder: Path) -> bool:
    return (folder / DB_NAME).exists() or (folder / CONFIG_NAME).exists()


# verify() results of ended runs, by the files' identity: a run list refreshed every
# few seconds reads each finished run whole once, not on every refresh.
_verified: dict[tuple, str | None] = {}


def _ident(p: Path) -> tuple:
    try:
        st = p.stat()
    except OSError:
        return ()
    return st.st_ino, st.st_size, st.st_mtime_ns


def _file_key(db: Path) -> tuple:
    return str(db), _ident(db), _ident(wal_path(db))


# Above this size the run list checks a run's structure and latest records only (a
# full read of many large runs would make the first listing take minutes); reports and
# exports still read every record.
FULL_VERIFY_MAX_BYTES = 64 << 20


def _verify_once(r: RunReader) -> None:
    key = _file_key(r.db_path)
    if key not in _verified:
        try:
            r.verify(full=sum(k[1] for k in key[1:] if k) <= FULL_VERIFY_MAX_BYTES)
            _verified[key] = None
        except RunFileError as e:
            _verified[key] = e.problem
        if len(_verified) > 4096:
            _verified.pop(next(iter(_verified)))
    if _verified[key] is not None:
        raise RunFileError(r.db_path, _verified[key])


# Summaries of ended runs, by the identity of their files: the run list rescans every
# few seconds, and reading a run's summary takes a few ms (~3.6 ms each for the sample
# runs here), which for hundreds of runs would keep a core busy. A run whose status is
# final is read again only when one of its files changes (a note, a tag, a resume).
_ENDED = ("finished", "stopped", "failed")
_summaries: dict[tuple[str, bool], tuple[tuple, RunInfo]] = {}


def run_info(folder: str | Path, *, verify: bool = True) -> RunInfo:
    """The summary of one run folder; never raises for an unreadable run. With
    ``verify`` a run that is no longer running is read whole once (per change of its
    files; its structure and latest records only above FULL_VERIFY_MAX_BYTES), so
    damage in it makes it ``unreadable`` with the problem named. A finished, stopped or
    failed run's summary is kept and given again while its files stay unchanged."""
    folder = Path(folder)
    slot = (str(folder), verify)
    db_key = _file_key(folder / DB_NAME)
    key = db_key + (_ident(folder / CONFIG_NAME), FULL_VERIFY_MAX_BYTES)
    kept = _summaries.get(slot)
    # (kept only while its verification is: both caches forget a run together)
    if kept is not None and kept[0] == key and (not verify or db_key in _verified):
        return kept[1]
    info = _read_info(folder, verify)
    if info.status in _ENDED:
        _summaries[slot] = (key, info)
        if len(_summaries) > 4096:
            _summaries.pop(next(iter(_summaries)))
    else:
        _summaries.pop(slot, None)
    return info


def _read_info(folder: Path, verify: bool) -> RunInfo:
    try:
        with RunReader(folder) as r:
            if verify and r.status != "running":
                _verify_once(r)
            latest = r.latest()
            cfg = r.config if isinstance(r.config, dict) else {}
            keys = {f: (cfg.get(sec) or {}).get(k) for f, sec, k in KEY_CONFIG}
            return RunInfo(path=folder, run_id=r.run_id, name=r.name, status=r.status,
                           started=r.started, ended=r.ended, last_step=r.last_step(),
                           train_loss=_final(latest, "train/loss"),
                           val_loss=_final(latest, "val/loss"), error=None, run_error=r.error,
                           total_steps=planned_steps(cfg, r.meta), tags=r.tags,
                           sweep=_sweep_of(r.meta),
                           note=r.note, config_items=tuple(_flatten(cfg)), **keys)
    except RunFileError as e:
        return RunInfo(path=folder, run_id=folder.name, status="unreadable", error=str(e))


def list_runs(runs_dir: str | Path) -> list[RunInfo]:
    """Every run folder directly inside ``runs_dir``, newest first (by run id, which
    starts with the creation time). Folders holding neither ``run.sqlite`` nor
    ``config.toml`` are not runs and are skipped. RunFileError if ``runs_dir`` itself
    does not exist or is not a folder. Reads only; touches no file."""
    d = Path(runs_dir)
    if not d.exists():
        raise RunFileError(d, "runs folder not found")
    if not d.is_dir():
        raise RunFileError(d, "not a folder")
    infos = [run_info(p) for p in d.iterdir()
             if p.is_dir() and not p.name.startswith(".") and looks_like_run(p)]
    return sorted(infos, key=lambda i: (i.run_id, i.path.name), reverse=True)


def _final(latest, name: str) -> float | None:
    rows = latest[latest["name"] == name]
    if not len(rows):
        return None
    wide = rows[rows["member"] == -1]
    vals = (wide if len(wide) else rows[rows["member"] >= 0])["value"]
    if not len(vals):
        return None
    # skipna=False: one diverged (NaN) member makes the summary NaN rather than hiding it
    return float(vals.mean(skipna=False))
