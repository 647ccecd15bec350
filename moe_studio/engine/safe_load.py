"""Loading a ``.pt`` checkpoint the one safe way (``weights_only=True``), with a refusal
a person can read in one line instead of torch's paragraph of advice, part of which
("re-run with weights_only=False") is exactly what must not be done with a stranger's
file."""
from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

MAX_PROBLEM = 160


def _problem(e: BaseException) -> str:
    text = str(e)
    if isinstance(e, pickle.UnpicklingError) and "weights_only" in text.lower():
        found = re.search(r"(GLOBAL [\w.]+)", text)
        what = f" ({found.group(1)})" if found else ""
        return ("it holds Python objects besides tensors, which could run code when "
                f"loaded{what}; only weights-only checkpoints are loaded")
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), type(e).__name__)
    if "central directory" in first or "zip archive" in first:
        return "truncated or damaged (not a complete checkpoint archive)"
    first = first.split(". ")[0]
    return first if len(first) <= MAX_PROBLEM else first[:MAX_PROBLEM - 1] + "…"


def load_weights_only(path: str | Path, map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)``; ValueError with a one-line
    ``"<file name>: not loaded: <why>"`` for anything it refuses or cannot read."""
    import torch

    path = Path(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise ValueError(f"{path.name}: checkpoint not found") from None
    except Exception as e:  # noqa: BLE001 - a foreign, damaged or malicious file
        raise ValueError(f"{path.name}: not loaded: {_problem(e)}") from None
