"""Keys that older versions wrote, mapped to today's, so that the config of every
recorded run still loads."""
from __future__ import annotations

from typing import Any


class LegacyValueError(ValueError):
    """A retired key with a value its successor cannot take; ``path`` names the key."""

    def __init__(self, path: str, message: str):
        super().__init__(message)
        self.path = path


def upgrade_keys(section: str, table: dict[str, Any]) -> dict[str, Any]:
    """One section's key = value pairs with retired keys replaced by their successors.

    ``moe.shared_expert`` (a switch for one shared expert) became ``moe.n_shared`` (how
    many); a config naming both keeps ``n_shared``.
    """
    if section != "moe" or "shared_expert" not in table:
        return table
    out = dict(table)
    old = out.pop("shared_expert")
    if not isinstance(old, bool):
        raise LegacyValueError("moe.shared_expert",
                               f"moe.shared_expert must be true or false, got {old!r:.60}")
    out.setdefault("n_shared", int(old))
    return out
