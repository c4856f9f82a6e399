"""distill: turn logged LLM/agent runs into clean, reproducible post-training datasets."""

import secrets
from datetime import datetime
from importlib import resources

from omegaconf import OmegaConf

__version__ = "0.1.0"


def _bundled_data(relative: str) -> str:
    return str(resources.files("distill.data").joinpath(relative))


# `${distill.data:sample/agent_sessions.jsonl}` in a config names a file shipped with distill, from any cwd.
OmegaConf.register_new_resolver("distill.data", _bundled_data, replace=True)

# The default run directory: when this process started, plus a token of its own, so two runs started in the same
# second never share a directory. One value per process, so the CLI's own check and Hydra resolve the same path.
_STARTED = datetime.now()
_RUN_TOKEN = secrets.token_hex(3)
OmegaConf.register_new_resolver("distill.now", _STARTED.strftime, replace=True)
OmegaConf.register_new_resolver("distill.run_token", lambda: _RUN_TOKEN, replace=True)
