"""The app collects cyclic garbage in its GUI thread only (gui/gc_guard.py): a worker
thread's automatic collection that frees Qt objects deadlocked with the GUI thread."""
import gc
import threading
import weakref

import pytest

from moe_studio.gui.gc_guard import MainThreadCollector, collect_if_due


class _Node:
    def __init__(self):
        self.me = self   # a reference cycle: only the cyclic collector frees it


@pytest.fixture
def thresholds():
    saved, was = gc.get_threshold(), gc.isenabled()
    gc.disable()
    gc.collect()
    yield
    gc.set_threshold(*saved)
    (gc.enable if was else gc.disable)()


def test_collects_only_what_is_due(thresholds):
    gc.set_threshold(10_000, 10, 10)
    ref = weakref.ref(_Node())
    assert collect_if_due() == -1 and ref() is not None   # under the threshold: kept
    gc.set_threshold(1, 10, 10)
    junk = [[] for _ in range(50)]          # allocations push generation 0 past 1
    assert gc.get_count()[0] > 1
    assert collect_if_due() == 0 and ref() is None
    del junk


def test_collector_runs_in_its_own_thread_and_restores_gc(qtbot, thresholds):
    gc.enable()
    gc.set_threshold(1, 10, 10)
    c = MainThreadCollector(interval_ms=10)
    collected_in = []
    seen = None
    c.start()
    try:
        assert not gc.isenabled() and c.is_active()
        def seen(phase, info):
            if phase == "start":
                collected_in.append(threading.current_thread())
        gc.callbacks.append(seen)

        def worker():   # allocates a lot: with automatic collection on, it would collect
            refs = [weakref.ref(_Node()) for _ in range(200)]
            holder.append(refs)
        holder: list = []
        t = threading.Thread(target=worker)
        t.start()
        t.join()
        refs = holder[0]
        assert all(r() is not None for r in refs)   # nothing collected in the worker
        qtbot.waitUntil(lambda: all(r() is None for r in refs), timeout=5000)
        assert collected_in and set(collected_in) == {threading.main_thread()}
    finally:
        if seen in gc.callbacks:
            gc.callbacks.remove(seen)
        c.stop()
    assert gc.isenabled() and not c.is_active()
