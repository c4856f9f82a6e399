"""Shared test helpers: compose the real Hydra config, run the real pipeline, read what it wrote."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from distill.config import build_settings
from distill.runner import RunResult, run

REPO = Path(__file__).resolve().parents[1]


@contextmanager
def ctrl_c_reaches_children() -> Iterator[None]:
    """A child started inside takes Ctrl-C as a terminal's foreground job does, even when this test process runs
    with SIGINT ignored (a shell without job control starts `.ci/run &` so, and an ignored signal stays ignored
    across exec): a Python handler set here is reset to the default in the child, where Python turns it into
    KeyboardInterrupt."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def compose_config(overrides: Sequence[str] = ()) -> dict[str, Any]:
    """The resolved job config, exactly as `python -m distill OVERRIDES` would compose it."""
    with initialize_config_module(version_base="1.3", config_module="distill.conf"):
        cfg = compose(config_name="config", overrides=list(overrides))
    return OmegaConf.to_container(cfg, resolve=True)


def run_pipeline(output_dir: Path, overrides: Sequence[str] = ()) -> RunResult:
    config = compose_config(overrides)
    return run(build_settings(config), output_dir, config=config)


def write_jsonl(path: Path, rows: Iterable[dict[str, Any] | str | bytes]) -> Path:
    """Writes dict rows as JSON lines; str/bytes rows verbatim (for malformed-input tests)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        for row in rows:
            if isinstance(row, dict):
                row = json.dumps(row)
            if isinstance(row, str):
                row = row.encode("utf-8")
            handle.write(row.rstrip(b"\n") + b"\n")
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text("utf-8").splitlines() if line.strip()]


def run_cli(args: Sequence[str], cwd: Path, *, module: bool = True) -> subprocess.CompletedProcess[str]:
    """`python -m distill ARGS` (or the console script) in a subprocess, as a user would type it."""
    command = [sys.executable, "-m", "distill", *args] if module else [str(Path(sys.executable).parent / "distill"), *args]
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, env=env, timeout=120)
