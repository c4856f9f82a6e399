"""The command line: `python -m distill [hydra flags] [overrides]` or the `distill` console script.

Kept thin on purpose: compose (Hydra), validate, call `runner.run`. Errors a user can fix print one line each on
stderr and exit 2, without a traceback.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any, NoReturn

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from distill.config import build_settings
from distill.errors import ConfigError, DistillError
from distill.runner import run

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def fail(problems: list[str]) -> NoReturn:
    for problem in problems:
        print(f"distill: error: {problem}", file=sys.stderr)
    sys.exit(EXIT_USAGE)


def resolve(cfg: DictConfig) -> dict[str, Any]:
    try:
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)  # type: ignore[return-value]
    except OmegaConfBaseException as error:
        key = getattr(error, "full_key", None) or "config"
        # OmegaConf appends full_key/object_type lines to its message; the first line says it all.
        message = str(getattr(error, "msg", None) or error).splitlines()[0]
        fail([f"{key}: {message}"])


@hydra.main(version_base="1.3", config_path="pkg://distill.conf", config_name="config")
def app(cfg: DictConfig) -> None:
    config = resolve(cfg)
    runtime = HydraConfig.get().runtime
    choices = {group: option for group, option in runtime.choices.items() if not group.startswith("hydra/")}
    try:
        settings = build_settings(config)
        result = run(
            settings,
            Path(runtime.output_dir),
            config=config,
            choices=choices,
            command=shlex.join(["distill", *sys.argv[1:]]),
        )
    except ConfigError as error:
        fail(error.problems)
    except DistillError as error:
        fail([str(error)])
    except KeyboardInterrupt:
        # The executor has already stopped its workers (and a local Ray it started) on the way out.
        print("distill: interrupted", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    print(result.summary())


def main() -> None:
    app()
