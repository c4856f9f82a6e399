"""Executors run the plan's map and reduce tasks: `local` (worker processes on this machine) by default."""

from distill.executor.local import LocalExecutor

__all__ = ["LocalExecutor"]
