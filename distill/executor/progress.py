"""Progress of a long phase on stderr: a tqdm bar on a terminal, else a log line every few seconds (CI logs and
files stay readable). Each line says what is done, how fast and how long is left."""

from __future__ import annotations

import logging
import resource
import sys
import time
from typing import Any

log = logging.getLogger("distill.progress")
LOG_EVERY_SECONDS = 5.0


class Progress:
    def __init__(self, phase: str, total: int, unit: str, *, done: int = 0) -> None:
        self.phase, self.total, self.unit = phase, total, unit
        self.done = done
        self.rows = 0
        self.started = time.perf_counter()
        self.logged = self.started
        self.bar: Any = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=done, desc=phase, unit=unit, unit_scale=True, file=sys.stderr, leave=False)

    def advance(self, amount: int, rows: int = 0) -> None:
        self.done += amount
        self.rows += rows
        if self.bar is not None:
            self.bar.update(amount)
            if rows:
                self.bar.set_postfix(rows=self.rows, refresh=False)
            return
        now = time.perf_counter()
        if now - self.logged >= LOG_EVERY_SECONDS or self.done >= self.total:
            self.logged = now
            elapsed = max(now - self.started, 1e-9)
            rate = self.rows / elapsed
            left = (self.total - self.done) / (self.done / elapsed) if self.done else float("nan")
            log.info(
                "%s: %d/%d %s, %d rows (%.0f rows/s), about %.0f s left",
                self.phase, self.done, self.total, self.unit, self.rows, rate, left,
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def log_phase(executor: str, phase: str, started: float, task_seconds: float | None = None, rows: int = 0) -> None:
    """The phase's wall time and, for map and reduce, the seconds its tasks ran: per-core rates for bench/."""
    wall = time.perf_counter() - started
    if task_seconds is None:
        log.info("%s %s: %.2f s", executor, phase, wall)
    else:
        log.info("%s %s: %.2f s, %.2f task-seconds, %d rows", executor, phase, wall, task_seconds, rows)


def peak_rss_mib() -> float:
    """This process's peak resident memory so far, for the phase logs bench/ reads: Linux's VmHWM, which
    `restart_peak_rss` restarts (`ru_maxrss` keeps a peak from before once a thread of the process has ended),
    elsewhere `ru_maxrss` (Linux reports KiB)."""
    try:
        with open("/proc/self/status", "rb") as status:
            for line in status:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def restart_peak_rss() -> None:
    """Starts this process's peak resident memory (`peak_rss_mib`) anew from what it holds now, where Linux allows
    it (`/proc/self/clear_refs`): a pool worker's figure for a phase is then that phase's, not an earlier phase's on
    the same worker. Elsewhere the peak stays the process's."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        pass
