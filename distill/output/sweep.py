"""`sweep_report.html`: the jobs of a multirun side by side, rebuilt from the job directories whenever a job ends,
so it exists (and shows the jobs run so far) whatever happens to later jobs. A failed job leaves `error.json` in its
own directory instead of a manifest, and shows as failed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from omegaconf import OmegaConf

from distill.output.figures import bar_chart, stacked_bar_chart
from distill.output.files import write_json
from distill.output.render import render, write_document

SWEEP_REPORT_FILE = "sweep_report.html"
ERROR_FILE = "error.json"
OVERRIDES_FILE = Path(".hydra") / "overrides.yaml"
REASONS_PLOTTED = 8


@dataclass
class Job:
    """One job directory of a sweep: its overrides and either its manifest (and stats) or its error."""

    name: str
    overrides: dict[str, str]
    manifest: dict[str, Any] | None = None
    stats: dict[str, Any] | None = None
    error: dict[str, Any] | None = None

    @property
    def status(self) -> str:
        return "done" if self.manifest else "failed" if self.error else "running or stopped"

    def _weighted(self, section: str, figure: str) -> float | None:
        """A figure averaged over the job's dataset files, weighted by each file's count."""
        total = weight = 0.0
        for stats in (self.stats or {}).get("files", {}).values():
            summary = stats.get(section) or {}
            if summary.get(figure) is not None and summary.get("count"):
                total += summary[figure] * summary["count"]
                weight += summary["count"]
        return total / weight if weight else None

    @property
    def examples(self) -> int | None:
        return (self.manifest or {}).get("counts", {}).get("examples")

    @property
    def tokens_mean(self) -> float | None:
        return self._weighted("tokens_per_example", "mean")

    @property
    def reward_mean(self) -> float | None:
        return self._weighted("rewards", "mean")

    @property
    def dropped(self) -> dict[str, int]:
        return dict((self.manifest or {}).get("quarantine", {}))


def write_job_error(job_dir: Path, overrides: Sequence[str], error: BaseException, problems: Sequence[str]) -> Path:
    """Records why a job failed in its own directory (`error.json`), for the sweep report and for people."""
    job_dir.mkdir(parents=True, exist_ok=True)
    path = job_dir / ERROR_FILE
    write_json(path, {"overrides": list(overrides), "error": type(error).__name__, "problems": list(problems)})
    return path


def _key_value(override: str) -> tuple[str, str]:
    key, _, value = override.partition("=")
    return key.lstrip("~+"), value


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None


def _order(path: Path) -> tuple[int, str]:
    return (int(path.name), "") if path.name.isdigit() else (1 << 62, path.name)


def read_jobs(sweep_dir: Path) -> tuple[list[Job], list[str]]:
    """Every job directory under the sweep (those holding Hydra's overrides.yaml), in job order, and the override
    keys whose values differ between them (the swept parameters)."""
    jobs = []
    for job_dir in sorted((p for p in sweep_dir.iterdir() if (p / OVERRIDES_FILE).is_file()), key=_order):
        overrides = dict(_key_value(str(o)) for o in OmegaConf.load(job_dir / OVERRIDES_FILE))
        jobs.append(Job(
            name=job_dir.name,
            overrides=overrides,
            manifest=_read_json(job_dir / "manifest.json"),
            stats=_read_json(job_dir / "stats.json"),
            error=_read_json(job_dir / ERROR_FILE),
        ))
    keys = sorted({key for job in jobs for key in job.overrides})
    swept = [key for key in keys if len({job.overrides.get(key) for job in jobs}) > 1]
    return jobs, swept


def sweep_context(sweep_dir: Path) -> dict[str, Any]:
    jobs, swept = read_jobs(sweep_dir)
    common = sorted({f"{k}={v}" for job in jobs for k, v in job.overrides.items() if k not in swept})
    reasons = sorted({reason for job in jobs for reason in job.dropped})
    ranked = sorted(reasons, key=lambda r: -sum(job.dropped.get(r, 0) for job in jobs))
    plotted = ranked[:REASONS_PLOTTED]
    # Short axis labels: the job and its swept values (the table names the keys).
    labels = [
        " ".join([f"#{job.name}", *(job.overrides.get(key, "-") for key in swept)])
        + ("" if job.manifest else f" ({job.status})")
        for job in jobs
    ]
    series = {reason: [job.dropped.get(reason, 0) for job in jobs] for reason in plotted}
    if len(ranked) > REASONS_PLOTTED:
        series["other reasons"] = [sum(job.dropped.get(r, 0) for r in ranked[REASONS_PLOTTED:]) for job in jobs]

    def per_job(value: Any) -> list[float]:
        return [value(job) or 0 for job in jobs]

    charts = [
        bar_chart("examples kept per job", list(zip(labels, per_job(lambda j: j.examples)))),
        stacked_bar_chart("quarantined rows per job, by reason", labels, series),
        bar_chart("mean tokens per example", list(zip(labels, per_job(lambda j: j.tokens_mean)))),
        bar_chart("mean reward", list(zip(labels, per_job(lambda j: j.reward_mean)))),
    ]
    return {
        "sweep_dir": sweep_dir.name,
        "jobs": jobs,
        "swept": swept,
        "common": common,
        "reasons": reasons,
        "charts": charts,
        "failed": [job for job in jobs if job.error],
    }


def write_sweep_report(sweep_dir: Path) -> dict[str, Any]:
    """(Re)writes sweep_report.html from the job directories found under `sweep_dir`."""
    return write_document(sweep_dir / SWEEP_REPORT_FILE, render("sweep_report.html.j2", **sweep_context(sweep_dir)))
