"""One job of a Hydra multirun (`-m`): a failure stays in the job, the sweep goes on.

Hydra 1.3's basic sweeper re-raises a failed job's exception once its batch of jobs has run (and a `SystemExit`
from a job is not caught by its launcher at all), so one bad value in a sweep ends the whole sweep. Inside a
multirun, `sweep_job` therefore records a job's error in the job's own directory (`error.json`), prints it, and lets
the job end normally; the process exits non-zero once the sweep is over (`exit_status`). Either way the job then
rewrites the sweep's `sweep_report.html` from every job directory so far. Outside a multirun it changes nothing.
"""

from __future__ import annotations

import logging
import shlex
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from distill.errors import ConfigError, DistillError
from distill.output.sweep import write_job_error, write_sweep_report

log = logging.getLogger(__name__)

EXIT_JOBS_FAILED = 1
FAILED_JOBS: list[str] = []


def in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def job_command(argv: list[str]) -> str:
    """The command that reruns this job: in a multirun, `distill` with the job's own overrides (one value each);
    otherwise the command line as typed."""
    if in_multirun():
        return shlex.join(["distill", *HydraConfig.get().overrides.task])
    return shlex.join(["distill", *argv])


@contextmanager
def sweep_job(config: dict[str, Any]) -> Iterator[None]:
    if not in_multirun():
        yield
        return
    hydra = HydraConfig.get()
    job_dir = Path(hydra.runtime.output_dir)
    try:
        yield
    except Exception as error:  # noqa: BLE001 - every failure of a job is the job's, not the sweep's
        problems = error.problems if isinstance(error, ConfigError) else [str(error)]
        if not isinstance(error, DistillError):
            traceback.print_exc()
            problems = [f"{type(error).__name__}: {error}"]
        for problem in problems:
            print(f"distill: error: job {hydra.job.num}: {problem}", file=sys.stderr)
        write_job_error(job_dir, list(hydra.overrides.task), error, problems)
        FAILED_JOBS.append(str(hydra.job.num))
    finally:
        if config.get("report") is not False:
            try:
                write_sweep_report(Path(hydra.sweep.dir))
            except Exception:  # noqa: BLE001 - a report that cannot be drawn must not stop the sweep
                log.exception("could not write the sweep report")


def exit_status() -> int:
    """Non-zero when a job of the sweep failed."""
    if FAILED_JOBS:
        failed = ", ".join(FAILED_JOBS)
        print(f"distill: {len(FAILED_JOBS)} job(s) failed: {failed} (see error.json in each)", file=sys.stderr)
        return EXIT_JOBS_FAILED
    return 0
