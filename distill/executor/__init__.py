"""Executors run the plan's map, decide and reduce tasks: `local` (worker processes on this machine) by default,
`ray` (a local Ray or a cluster, `pip install 'distill[ray]'`). Both give the same files, byte for byte.

An executor is a context manager (the ray executor starts or joins Ray on entry and stops what it started on exit)
with `warm_up`, `run_map`, `decide`, `run_reduce` and `describe()` (what the manifest records about it)."""

from __future__ import annotations

from typing import Any

from distill.executor.local import LocalExecutor
from distill.plan.prepare import ExecutorSettings


def make_executor(settings: ExecutorSettings) -> Any:
    """The executor `executor.kind` names; the ray one is imported only when chosen (an optional extra)."""
    if settings.kind == "ray":
        from distill.executor.ray import RayExecutor

        return RayExecutor(settings)
    return LocalExecutor(settings.workers, settings.shard_bytes)


__all__ = ["LocalExecutor", "make_executor"]
