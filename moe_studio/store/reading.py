"""One way for damage in a run file to reach callers: a one-line ``RunFileError``.

Shared by the reader and the follower (which polls through a reader), so that neither
imports the other for it.
"""
from __future__ import annotations

import sqlite3
import zlib
from contextlib import contextmanager
from pathlib import Path

from .errors import RunFileError
from .schema import db_error

# What decoding a damaged record raises (garbage JSON, a garbage dtype or shape, a
# broken zlib stream, a name row deleted, a text where a number belongs): all of it
# reaches callers as one RunFileError.
_DAMAGE = (ValueError, TypeError, KeyError, IndexError, OverflowError, AttributeError, zlib.error)


class SeriesShapeError(ValueError):
    """A series whose shape changed during the run, asked for as one stacked array
    (not damage: read it record by record)."""


@contextmanager
def reading(db_path: Path):
    """Turn whatever decoding a damaged record raises into a one-line RunFileError."""
    try:
        yield
    except (RunFileError, SeriesShapeError):
        raise
    except sqlite3.DatabaseError as e:
        raise db_error(db_path, e) from None
    except _DAMAGE as e:
        text = " ".join(str(e).split())[:200]
        raise RunFileError(db_path, f"damaged records ({type(e).__name__}: {text})") from None
