"""Python's cyclic garbage collector, run in the GUI thread only.

CPython collects whenever allocations cross a threshold, in whichever thread happens to
allocate. When that is a worker thread (the runs panel's folder scan, an estimate, a
training thread) and the garbage holds Qt objects, their C++ destructors run there while
the GUI thread deletes other objects: each thread then waits for a lock the other holds
(Qt's connection mutex, the GIL) and the app freezes for good. That froze a test run
(stacks: the scan thread in ``gc_collect_main`` -> ``QObject::~QObject`` waiting for the
GIL, the GUI thread in ``QObject::~QObject`` waiting for the mutex).

So the app turns automatic collection off and collects on a timer in the GUI thread,
with the interpreter's own thresholds: the same generations are collected, just never
in another thread. Reference counting, which frees almost everything, is untouched.
"""
from __future__ import annotations

import gc

from PySide6.QtCore import QObject, QTimer


def collect_if_due() -> int:
    """Collect the oldest generation whose count has passed its threshold, as CPython's
    automatic collection would (-1 when none has; else the generation collected)."""
    counts, thresholds = gc.get_count(), gc.get_threshold()
    due = -1
    for gen in range(3):
        if thresholds[gen] and counts[gen] > thresholds[gen]:
            due = gen
    if due >= 0:
        gc.collect(due)
    return due


class MainThreadCollector(QObject):
    """While started: automatic collection off, ``collect_if_due`` every
    ``interval_ms`` in the thread that owns this object (create it in the GUI thread)."""

    def __init__(self, interval_ms: int = 500, parent: QObject | None = None):
        super().__init__(parent)
        self._timer = QTimer(self)
        self._timer.setObjectName("gc-collector")
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(collect_if_due)
        self._was_enabled = gc.isenabled()

    def start(self) -> None:
        self._was_enabled = gc.isenabled()
        gc.disable()
        self._timer.start()

    def stop(self) -> None:
        self._timer.stop()
        if self._was_enabled:
            gc.enable()

    def is_active(self) -> bool:
        return self._timer.isActive()
