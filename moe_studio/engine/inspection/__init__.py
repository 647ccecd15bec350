"""Inspection of pretrained Hugging Face MoE checkpoints (see inspector.py).

Importing this package is cheap (no torch, no transformers): the GUI reads the options
and the family list from it; ``Inspector`` is imported on first use.
"""
from __future__ import annotations

from .families import FAMILIES, Family, installed_families
from .options import KIND, InspectOptions

__all__ = ["FAMILIES", "Family", "InspectOptions", "installed_families", "Inspector",
           "InspectError", "KIND"]


def __getattr__(name: str):
    if name == "Inspector":
        from .inspector import Inspector
        return Inspector
    if name == "InspectError":
        from .loading import InspectError
        return InspectError
    raise AttributeError(name)
