"""Where the user's own words about a run live in its ``meta`` table: keys ``tags`` (a
JSON list of single-word strings) and ``note`` (a JSON string). Read by every reader;
written by :mod:`.organise` (or by a run's creator through ``RunWriter.set_meta``)."""
from __future__ import annotations

TAGS_KEY = "tags"
NOTE_KEY = "note"


def tags_from_meta(meta: dict) -> tuple[str, ...]:
    """The run's tags from its meta dict; anything malformed there reads as no tags
    (a tag list is a convenience, never a reason to refuse a run)."""
    raw = meta.get(TAGS_KEY)
    if not isinstance(raw, list):
        return ()
    return tuple(dict.fromkeys(t for t in raw if isinstance(t, str) and t))


def note_from_meta(meta: dict) -> str | None:
    raw = meta.get(NOTE_KEY)
    return raw if isinstance(raw, str) and raw.strip() else None
