"""distill: turn logged LLM/agent runs into clean, reproducible post-training datasets."""

from importlib import resources

from omegaconf import OmegaConf

__version__ = "0.1.0"


def _bundled_data(relative: str) -> str:
    return str(resources.files("distill.data").joinpath(relative))


# `${distill.data:sample/agent_sessions.jsonl}` in a config names a file shipped with distill, from any cwd.
OmegaConf.register_new_resolver("distill.data", _bundled_data, replace=True)
