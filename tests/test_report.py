"""report.html and sweep_report.html: what they hold, that they are bounded and stable, and that a real headless
Chromium loads them without a console error and shows log text as text."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
from helpers import run_cli, run_pipeline, write_jsonl

from jsonschema import Draft202012Validator

from distill.output.documents import RunDigest
from distill.output.report import REPORT_FILE, render_report
from distill.output.render import emptied_by, funnel_rows
from distill.validation import load_schema

SCRIPT = "<script>window.distillPwned = 1; document.title = 'pwned';</script>"
LEAK = "the capital of the small island nation is a harbour town founded by fishermen in the ninth century"


def session(n: int, answer: str, *, category: str = "accepted", created: int = 0, **extra) -> list[dict]:
    return [
        {"id": f"u{n}", "session_id": f"s{n}", "role": "user", "text": f"question number {n}", "created_at": created},
        {"id": f"a{n}", "session_id": f"s{n}", "role": "assistant", "text": answer, "created_at": created + 1,
         "category": category, "reward": 0.5 + n / 100, **extra},
    ]


@pytest.fixture(scope="module")
def logs(tmp_path_factory) -> Path:
    """Sessions with a `<script>` answer (exported) and a rejected one (quarantined), near-duplicate sessions, a
    tool call, and a leaked eval item."""
    root = tmp_path_factory.mktemp("report")
    near = "please restart the billing worker then clear the queue and check the invoices dashboard for errors today"
    rows = [
        *session(0, f"Here is the fix: {SCRIPT}", created=0),
        *session(1, f"Rejected answer {SCRIPT}", category="rejected", created=10),
        *session(2, near, created=20),
        *session(3, near + " please", created=30),
        *session(4, near + " thanks", created=40),
        *session(5, f"As asked: {LEAK}.", created=50),
        *session(6, "", created=60, tool_calls=[{"type": "function", "function": {"name": "grep", "arguments": "{}"}}]),
        {"id": "t6", "session_id": "s6", "role": "tool", "name": "grep", "text": "no match", "created_at": 62},
        {"id": "a6b", "session_id": "s6", "role": "assistant", "text": "Nothing found.", "created_at": 63, "category": "accepted"},
        *(row for n in range(7, 20) for row in session(n, f"plain answer {n}", created=100 + n * 10)),
    ]
    write_jsonl(root / "logs.jsonl", rows)
    write_jsonl(root / "evals" / "trivia.jsonl", [{"id": "q1", "text": LEAK}])
    return root


def thorough(logs: Path) -> list[str]:
    return [
        f"source.path={logs / 'logs.jsonl'}",
        f"++curation.steps.decontaminate.eval_sets=[{logs / 'evals' / 'trivia.jsonl'}]",
        "++curation.steps.near_dedup.threshold=0.7",
        "split.eval_fraction=0.3",
    ]


# -- the report's content ---------------------------------------------------------------------------------------


def test_the_report_is_an_output_of_the_run_with_its_hash(tmp_path: Path) -> None:
    result = run_pipeline(tmp_path)
    entry = next(e for e in result.manifest["outputs"] if e["path"] == REPORT_FILE)
    assert entry["sha256"] == hashlib.sha256((tmp_path / REPORT_FILE).read_bytes()).hexdigest()
    assert REPORT_FILE in result.files


def test_a_rerun_writes_the_same_report_bytes(tmp_path: Path) -> None:
    first = run_pipeline(tmp_path / "a")
    second = run_pipeline(tmp_path / "b")
    assert (tmp_path / "a" / REPORT_FILE).read_bytes() == (tmp_path / "b" / REPORT_FILE).read_bytes()
    assert first.manifest["created_at"] or second  # the manifest's wall-clock time is not in the report


def test_report_false_writes_no_report(tmp_path: Path) -> None:
    result = run_pipeline(tmp_path, ["report=false"])
    assert not (tmp_path / REPORT_FILE).exists()
    assert REPORT_FILE not in [e["path"] for e in result.manifest["outputs"]]


def test_near_duplicate_clusters_and_decontamination_hits_reach_the_report(tmp_path: Path, logs: Path) -> None:
    result = run_pipeline(tmp_path, thorough(logs))
    stages = {s["step"]: s for s in result.manifest["stages"]}
    (cluster,) = stages["near_dedup"]["largest_clusters"]
    assert cluster["size"] == 3 and cluster["survivor"] == "s2" and cluster["duplicate"] == "s3"
    assert stages["decontaminate"]["first_hits"]["trivia"]["record_id"] == "a5"
    html = (tmp_path / REPORT_FILE).read_text()
    assert cluster["duplicate_record"] == "a3"  # the duplicate conversation's last record, its text from its quarantine row
    assert "please restart the billing worker" in html
    assert stages["decontaminate"]["first_hits"]["trivia"]["matched_ngram"] in html
    assert html.count("&lt;script&gt;window.distillPwned") >= 2 and "<script>window" not in html


def test_stats_histograms_count_every_example(tmp_path: Path) -> None:
    run_pipeline(tmp_path)
    stats = json.loads((tmp_path / "stats.json").read_text())
    for section in stats["files"].values():
        for name in ("tokens_per_example", "turns_per_example"):
            histogram = section["histograms"][name]
            assert sum(histogram["counts"]) + histogram["under"] + histogram["over"] == section["examples"]
        rewards = section["histograms"]["rewards"]
        assert sum(rewards["counts"]) + rewards["under"] + rewards["over"] == section["rewards"]["count"]


def test_the_report_stays_bounded_when_records_are_huge(tmp_path: Path) -> None:
    result = run_pipeline(tmp_path)
    stats = json.loads((tmp_path / "stats.json").read_text())
    messages = [{"role": "user", "content": "y" * 1_000_000, "tool_calls": [{"a": "b" * 100_000}]}] * 500
    line = {"id": "x", "messages": messages, "candidates": [{"messages": messages, "rank": 1}] * 100}
    row = {"step": "parse", "reason": "invalid_json", "errors": ["e" * 100_000] * 10_000, "record_id": None, "record": "z" * 65536}
    manifest = {**result.manifest, "outputs": [{"path": f"f{i}", "sha256": "0" * 64} for i in range(100_000)]}
    stats["files"]["sft.train.jsonl"]["by_tenant"] = {f"tenant-{i}": 1 for i in range(100_000)}
    html = render_report(RunDigest(manifest, stats, {"invalid_json": [row] * 5}, {"sft.train.jsonl": [line] * 3}))
    assert len(html.encode()) < 5_000_000


def test_a_run_that_exports_nothing_names_the_stage_that_emptied_it(tmp_path: Path) -> None:
    rows = [{"id": f"r{i}", "session_id": "s", "role": "assistant", "text": "t", "lifecycle_status": "tombstoned"} for i in range(3)]
    write_jsonl(tmp_path / "in.jsonl", rows)
    result = run_pipeline(tmp_path / "out", [f"source.path={tmp_path / 'in.jsonl'}"])
    assert emptied_by(result.manifest) == "Stage lifecycle dropped all 3 remaining rows (lifecycle 3)."
    assert "Stage lifecycle dropped all 3 remaining rows" in (tmp_path / "out" / REPORT_FILE).read_text()


# -- in a real browser ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium driven by the system's chromedriver (Debian: chromium, chromium-driver)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver_path = shutil.which("chromedriver")
    if not (chromium and driver_path):
        if os.environ.get("CI"):
            pytest.fail("chromium and chromedriver must be installed (.ci/run installs them)")
        pytest.skip("chromium / chromedriver not installed (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    yield driver
    driver.quit()


def open_page(browser, path: Path) -> None:
    browser.get(path.resolve().as_uri())
    assert browser.execute_script("return document.readyState") == "complete"


def console_errors(browser) -> list[dict]:
    return [entry for entry in browser.get_log("browser") if entry["level"] in ("SEVERE", "ERROR")]


def test_the_sample_report_loads_and_shows_the_manifest_funnel(browser, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    result = run_pipeline(tmp_path)
    open_page(browser, tmp_path / REPORT_FILE)
    assert console_errors(browser) == []
    counts = result.manifest["counts"]
    assert browser.find_element(By.ID, "input-rows").text == f"{counts['input_rows']:,}"
    assert browser.find_element(By.ID, "examples").text == f"{counts['examples']:,}"
    shown = {
        row.get_attribute("data-step"): row.find_element(By.CSS_SELECTOR, "td.kept").text
        for row in browser.find_elements(By.CSS_SELECTOR, "#funnel-table tr[data-step]")
    }
    assert shown == {row.step: f"{row.kept:,}" for row in funnel_rows(result.manifest)}
    assert len(browser.find_elements(By.CSS_SELECTOR, "svg.chart")) >= 6  # 3 histograms x train and eval


def test_a_record_holding_a_script_shows_as_text_and_never_runs(browser, tmp_path: Path, logs: Path) -> None:
    from selenium.webdriver.common.by import By

    run_pipeline(tmp_path, thorough(logs))
    open_page(browser, tmp_path / REPORT_FILE)
    assert console_errors(browser) == []
    assert browser.execute_script("return window.distillPwned === undefined")
    assert browser.title.startswith("distill run report")
    page_text = browser.find_element(By.TAG_NAME, "body").get_attribute("textContent")
    assert page_text.count(SCRIPT) >= 2  # the exported example and the quarantined (rejected) record
    assert browser.find_elements(By.TAG_NAME, "script") == []


def test_the_report_of_an_empty_run_loads_and_says_why(browser, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    write_jsonl(tmp_path / "in.jsonl", [{"id": "r", "role": "user", "text": "hello", "lifecycle_status": "expired"}])
    result = run_pipeline(tmp_path / "out", [f"source.path={tmp_path / 'in.jsonl'}"])
    assert result.manifest["counts"]["examples"] == 0
    open_page(browser, tmp_path / "out" / REPORT_FILE)
    assert console_errors(browser) == []
    assert "Stage lifecycle dropped all 1 remaining rows" in browser.find_element(By.ID, "emptied").text
    assert browser.find_element(By.ID, "examples").text == "0"


def test_a_sweep_goes_on_past_a_failing_job_and_reports_every_job(browser, tmp_path: Path, logs: Path) -> None:
    from selenium.webdriver.common.by import By

    sweep = tmp_path / "sweep"
    done = run_cli(
        ["-m", f"source.path={logs / 'logs.jsonl'}", "split.eval_fraction=0.1,7,0.3", f"hydra.sweep.dir={sweep}"],
        cwd=tmp_path,
    )
    assert done.returncode == 1, done.stderr
    assert "job 1: split.eval_fraction: Input should be less than or equal to 1" in done.stderr
    assert (sweep / "0" / "manifest.json").exists() and (sweep / "2" / "manifest.json").exists()
    error = json.loads((sweep / "1" / "error.json").read_text())
    source = f"source.path={logs / 'logs.jsonl'}"
    assert error["overrides"] == [source, "split.eval_fraction=7"] and error["error"] == "ConfigError"
    Draft202012Validator(load_schema("job_error")).validate(error)
    manifest = json.loads((sweep / "2" / "manifest.json").read_text())
    assert manifest["command"] == f"distill {source} split.eval_fraction=0.3"  # this job's own command

    open_page(browser, sweep / "sweep_report.html")
    assert console_errors(browser) == []
    rows = browser.find_elements(By.CSS_SELECTOR, "#jobs-table tr[data-job]")
    assert [(r.get_attribute("data-job"), r.get_attribute("data-status")) for r in rows] == [
        ("0", "done"), ("1", "failed"), ("2", "done"),
    ]
    examples = json.loads((sweep / "0" / "manifest.json").read_text())["counts"]["examples"]
    assert rows[0].find_element(By.CSS_SELECTOR, "td.examples").text == f"{examples:,}"
    assert "Input should be less than or equal to 1" in browser.find_element(By.ID, "failures").text
    assert len(browser.find_elements(By.CSS_SELECTOR, "svg.chart")) == 4


# -- the shared rendering helpers -------------------------------------------------------------------------------


def test_helpers_format_numbers_clip_text_and_cut_long_mixes() -> None:
    from distill.output.render import clip, fmt_number, md_text, top_counts

    assert fmt_number(1234567) == "1,234,567" and fmt_number(0.5700000000000001) == "0.57" and fmt_number(None) == "–"
    assert clip("x" * 10, 4) == "xxxx… [6 more characters]"
    assert md_text("<b>*hi*</b> | `x`") == "&lt;b&gt;\\*hi\\*&lt;/b&gt; \\| \\`x\\`"
    mix = top_counts({f"t{i}": i for i in range(20)}, limit=3)
    assert mix == [("t19", 19), ("t18", 18), ("… 18 others", sum(range(18)))]


def test_histograms_use_fixed_bins_with_under_and_over() -> None:
    from distill.output.stats import histogram

    assert histogram([-3, 0, 0.5, 1, 1, 9], (0, 1, 2)) == {"edges": [0, 1, 2], "counts": [2, 2], "under": 1, "over": 1}
    assert histogram([], (0, 1)) == {"edges": [0, 1], "counts": [0], "under": 0, "over": 0}


def test_the_sweep_report_lists_a_job_that_has_not_finished(tmp_path: Path) -> None:
    from distill.output.sweep import read_jobs, write_sweep_report

    for name, value in (("0", "1"), ("1", "2")):
        (tmp_path / name / ".hydra").mkdir(parents=True)
        (tmp_path / name / ".hydra" / "overrides.yaml").write_text(f"- split.seed={value}\n- task=sft\n")
    jobs, swept = read_jobs(tmp_path)
    assert swept == ["split.seed"] and [job.status for job in jobs] == ["running or stopped"] * 2
    write_sweep_report(tmp_path)
    assert "running or stopped" in (tmp_path / "sweep_report.html").read_text()
