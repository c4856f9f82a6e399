"""Curation steps. Importing this package registers every step kind in `STEPS`."""

from distill.curation.steps import (  # noqa: F401
    category_gate,
    decontaminate,
    exact_dedup,
    file_paths_exist,
    lifecycle,
    min_reward,
    near_dedup,
    non_empty_text,
    scrub_secrets,
    semantic_dedup,
)
from distill.curation.steps.base import STEPS, GlobalStep, RecordStep, Step, StepContext, StepParams

__all__ = ["STEPS", "GlobalStep", "RecordStep", "Step", "StepContext", "StepParams"]
