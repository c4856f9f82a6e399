"""A worker's task gives the heap it freed back to the system (cyclic_gc_paused(collect_after=True))."""

from __future__ import annotations

import gc
import subprocess
import sys
import weakref
from pathlib import Path

import pytest

from distill.collector import cyclic_gc_paused, heap_trimmer, set_aside

HELD_AFTER_TASK = """
import os
from distill.collector import cyclic_gc_paused

def resident_mib():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

# What a reduce task leaves: many malloc'd objects (texts of 2-4 KB, beyond pymalloc's small-object pools) freed at
# once, with a few survivors scattered among them, as a partition's records and the run's small state are.
with cyclic_gc_paused(collect_after={collect}, give_back={give_back}):
    texts = [os.urandom(2048 + i % 2048) for i in range(60_000)]
    survivors = texts[::500]
    before = resident_mib()
    del texts
print(before - resident_mib())
"""


@pytest.mark.skipif(heap_trimmer() is None, reason="the C library has no malloc_trim (not glibc)")
def test_a_task_ends_with_the_heap_it_freed_given_back():
    def released(collect: bool, give_back: bool = True) -> float:
        code = HELD_AFTER_TASK.format(collect=collect, give_back=give_back)
        return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)

    # ~180 MB were allocated: glibc alone keeps most of it for later mallocs; trimmed, it goes back. A local reduce
    # task keeps it for the next partition (`give_back=False`).
    assert released(True) > 100
    assert released(False) < released(True) - 50
    assert released(True, give_back=False) < released(True) - 50


def test_what_lives_through_the_tasks_is_out_of_each_tasks_collection_and_back_after():
    # A collection after a task looks at what the task left, not at everything set up before it (modules, settings):
    # frozen objects are not traversed, and a cycle the task made is still collected.
    held = [object() for _ in range(1000)]
    with set_aside():
        assert gc.get_freeze_count() >= len(held)
        with cyclic_gc_paused(collect_after=True):
            cycle: list = []
            cycle.append(cycle)
            alive = weakref.ref(Cycle(cycle))
            del cycle
        assert alive() is None
    assert gc.get_freeze_count() == 0


class Cycle:
    def __init__(self, other: list) -> None:
        self.other = other
        other.append(self)


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="Linux's clear_refs restarts the peak")
def test_a_processs_peak_rss_restarts_from_what_it_holds_now():
    # A pool worker's phase reports its own peak, not the peak of an earlier phase on the same worker.
    code = (
        "from distill.executor.progress import peak_rss_mib, restart_peak_rss\n"
        "held = bytearray(256 << 20); del held\n"
        "before = peak_rss_mib(); restart_peak_rss(); print(before, peak_rss_mib())\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    before, after = map(float, done.stdout.split())
    assert before >= 256 and after < before - 200
