"""Export tasks. Importing this package registers every task kind in `TASKS`."""

from distill.tasks import category_pairing, coverage, instruction, preference, rag, rollout, sft  # noqa: F401
from distill.tasks.base import TASKS, Example, Task, TaskOutput, TaskParams

__all__ = ["TASKS", "Example", "Task", "TaskOutput", "TaskParams"]
