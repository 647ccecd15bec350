"""``train.stages``: training in stages, each freezing parts of the model for a number
of steps, e.g. ``"router:300, experts:200, none:500"`` (train the experts with the
router frozen, then the router with the experts frozen, then everything).

One item per stage, ``what:steps``; ``what`` is ``none`` or parts joined by ``+``
(``router+attention``). After the last stage nothing is frozen.
"""
from __future__ import annotations

from dataclasses import dataclass

# The parts a stage can freeze (engine.stages maps them to parameters).
FREEZABLE = ("router", "experts", "attention", "embeddings")


@dataclass(frozen=True)
class Stage:
    start: int                 # first step of the stage (0-based)
    steps: int
    freeze: tuple[str, ...]    # parts of FREEZABLE, empty for "none"

    @property
    def end(self) -> int:
        return self.start + self.steps

    @property
    def label(self) -> str:
        return "frozen: " + "+".join(self.freeze) if self.freeze else "all trained"


def parse_stages(text: str, path: str = "train.stages") -> list[Stage]:
    """The stages of a ``train.stages`` value; ValueError naming the bad item (the
    validator turns it into the field's ConfigError)."""
    stages: list[Stage] = []
    start = 0
    for item in (s.strip() for s in text.split(",")):
        if not item:
            continue
        what, sep, steps_s = item.rpartition(":")
        if not sep:
            raise ValueError(f"{path}: stage '{item}' must be what:steps, e.g. router:300")
        try:
            steps = int(steps_s.strip())
        except ValueError:
            raise ValueError(f"{path}: stage '{item}' has steps '{steps_s.strip()}', "
                             "not a whole number") from None
        if steps < 1:
            raise ValueError(f"{path}: stage '{item}' must last at least 1 step")
        parts = tuple(p.strip() for p in what.split("+"))
        if parts == ("none",):
            parts = ()
        bad = [p for p in parts if p not in FREEZABLE]
        if bad:
            raise ValueError(f"{path}: stage '{item}' freezes '{bad[0]}'; choose none or "
                             f"{', '.join(FREEZABLE)} (joined by +)")
        stages.append(Stage(start, steps, parts))
        start += steps
    return stages
