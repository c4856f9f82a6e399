"""Curation steps. Importing this package registers every step kind in `STEPS`."""

from distill.steps import category_gate, exact_dedup, lifecycle, min_reward, non_empty_text  # noqa: F401
from distill.steps import decontaminate, near_dedup, scrub_secrets, semantic_dedup  # noqa: F401
from distill.steps.base import STEPS, GlobalStep, RecordStep, Step, StepContext, StepParams

__all__ = ["STEPS", "GlobalStep", "RecordStep", "Step", "StepContext", "StepParams"]
