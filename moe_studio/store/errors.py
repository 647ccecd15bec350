"""The one error a run file can raise when it cannot be read."""
from __future__ import annotations

from pathlib import Path


class RunFileError(Exception):
    """A run folder or run database that cannot be read.

    ``str(e)`` is a single line, ``"<file>: <problem>"``, fit to print as it is in a
    terminal or a status bar. ``path`` is the file (or folder) and ``problem`` the text
    after the colon.
    """

    def __init__(self, path: str | Path, problem: str):
        self.path = Path(path)
        # Messages from SQLite or the OS may carry newlines; the contract is one line.
        self.problem = " ".join(str(problem).split())
        super().__init__(f"{self.path}: {self.problem}")
