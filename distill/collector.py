"""How the run's processes manage memory: Python's cycle collector paused while the plan works, in the driver and
in every worker (local or Ray), and glibc told to keep freed memory for reuse (`keep_freed_memory`).

A run allocates millions of small, acyclic objects (records, dicts, keys) and keeps many alive for a while; the
cycle collector would rescan them again and again for nothing. Measured on 1e5 bench records: parsing 2.7 s -> 1.8 s
and the default-chain run 8.3 s -> 6.6 s with it paused in the driver; in the local workers, reduce 8.45 -> 5.28
task-seconds and map 5.7 -> 4.8. Reference counting still frees everything as usual.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache


@contextmanager
def cyclic_gc_paused(*, collect_after: bool = False, give_back: bool = True) -> Iterator[None]:
    """The collector off inside the block and as it was after; `collect_after`: one collection when the block
    ends (a worker's task, so a worker that runs many never accumulates cycles), and, unless `give_back` is False,
    the freed heap given back to the system."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
        if collect_after:
            gc.collect()
            trim = heap_trimmer() if give_back else None
            if trim is not None:
                trim(0)


@cache
def heap_trimmer() -> Callable[[int], int] | None:
    """glibc's `malloc_trim`, or None where the C library has none. glibc keeps a process's freed heap for later
    mallocs, so a worker would hold its largest task's peak until it exits: at 1e6 bench records a reduce worker
    held 380-460 MB between partitions, ~160 MB once trimmed, and its peak fell from 448 to 405 MiB (the records of
    one partition are many small objects freed at once)."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
KEPT_HEAP_BYTES = 128 << 20
"""How much freed memory at the top of its heap a process keeps for later mallocs instead of giving it back."""
MAPPED_ALLOCATION_BYTES = 32 << 20
"""Allocations below this size come from the heap, not from a mapping of their own."""


def keep_freed_memory() -> None:
    """Has glibc keep the memory a process frees for its next allocations: blocks of up to 32 MiB (a spill's frame
    and its pickle, a pack of records, a block of output lines) come from the heap instead of a fresh mapping each,
    and up to 128 MiB of freed heap stay mapped. By default each such block was a mapping of its own, faulted in
    page by page and unmapped when freed, and the freed heap was given back as soon as 128 KiB of it lay free: on a
    VM, a page touched anew costs microseconds (bench/RESULTS.md). Peak memory is what the process holds at once,
    as before; a pool's workers end with their phase. Nothing where the C library has no `mallopt` (not glibc)."""
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return
    mallopt(M_TRIM_THRESHOLD, KEPT_HEAP_BYTES)
    mallopt(M_MMAP_THRESHOLD, MAPPED_ALLOCATION_BYTES)


@contextmanager
def set_aside() -> Iterator[None]:
    """Every object alive now is hidden from the cycle collector until the block ends (`gc.freeze`): the modules,
    the run's settings and whatever the steps loaded live as long as the tasks, so the collection after each task
    (`cyclic_gc_paused(collect_after=True)`) need only look at what the task left, not at every object of the
    process again (bench/RESULTS.md)."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
