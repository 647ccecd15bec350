"""The runs filter: one line of words that the runs panel and ``moe-studio runs --filter``
read the same way.

Every word must match (AND):

- ``tag:NAME``: the run carries that tag;
- ``status:WORD``: its status is WORD (finished, stopped, failed, running, interrupted,
  unreadable);
- ``sweep:NAME``: a run of that sweep (its folder name, ``sweep-20261204-101500-my``, or
  its name, ``my``);
- ``KEY=VALUE`` (also ``!=``, ``<``, ``<=``, ``>``, ``>=``): a config value, KEY as
  ``section.key`` or the key alone when that is unambiguous enough for you
  (``moe.top_k=2``, ``top_k>=2``, ``precision.mode=bf16``); numbers compare as numbers;
- any other word: found in the name, run id, status, setup, tags, note or error.
"""
from __future__ import annotations

import operator
import re
from typing import Any, Iterable

from .runs import RunInfo, describe_setup

_OPS = {"=": operator.eq, "!=": operator.ne, "<=": operator.le, ">=": operator.ge,
        "<": operator.lt, ">": operator.gt}
_COMPARE = re.compile(r"^([A-Za-z_][\w.]*)(!=|<=|>=|=|<|>)(.*)$")


def matches(info: RunInfo, query: str, also: Iterable[str] = ()) -> bool:
    """Whether ``info`` passes every word of ``query``; ``also``: more text a plain word
    may be found in (what a view shows beside the run, e.g. its start date)."""
    words = query.split()
    if not words:
        return True
    hay = " ".join(str(x) for x in (info.name, info.run_id, info.status, describe_setup(info),
                                      " ".join(info.tags), info.note, info.error, *also)
                   if x).lower()
    return all(_word(info, w, hay) for w in words)


def _word(info: RunInfo, word: str, hay: str) -> bool:
    low = word.lower()
    if low.startswith("tag:") and len(low) > 4:
        return low[4:] in (t.lower() for t in info.tags)
    if low.startswith("status:") and len(low) > 7:
        return (info.status or "").lower() == low[7:]
    if low.startswith("sweep:") and len(low) > 6:
        return low[6:] in (s.lower() for s in info.sweep)
    m = _COMPARE.match(word)
    if m:
        key, op, want = m.groups()
        found = [v for k, v in info.config_items if k == key or k.endswith("." + key)]
        return any(_compare(v, _OPS[op], want) for v in found)
    return low in hay


def _compare(have: Any, op, want: str) -> bool:
    if isinstance(have, bool) or want.lower() in ("true", "false"):
        return op(str(have).lower(), want.lower()) if op in (operator.eq, operator.ne) else False
    try:
        return op(float(have), float(want))
    except (TypeError, ValueError):
        pass
    if op in (operator.eq, operator.ne):
        return op(str(have).lower(), want.lower())
    return False
