"""executor=ray gives the files executor=local gives, byte for byte, survives a killed worker, and fails in one line.

One local Ray (2 CPUs) serves the whole module: the executor joins the Ray its process already has.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import compose_config, ctrl_c_reaches_children, run_cli
from test_plan import SAMPLE_TASKS, corpus, run_dir  # noqa: F401 - corpus is a fixture

from distill.hashing import hash64
from lakehouse_fixture import FIXTURE

ray = pytest.importorskip("ray")
from distill.errors import ConfigError, DistillError  # noqa: E402
from distill.executor.ray import FAULT_ENV, get  # noqa: E402

pytestmark = pytest.mark.xdist_group("ray")

LOCAL = ["executor.workers=1", "executor.partitions=1"]
RAY = ["executor=ray", "executor.partitions=3", "executor.shard_mb=0.05"]
MANIFEST_MAY_DIFFER = ("created_at", "config_sha256", "command", "executor")
DOCUMENTS = ("report.html", "README.md")
"""For people (the report, the dataset card), rendered from the manifest: they show the command and the config's
hash, which name the executor."""


def data_files(output_dir: Path, overrides: list[str]) -> dict[str, bytes]:
    """The run's dataset, quarantine and stats files (and coverage packages): what must be the same bytes."""
    return {name: data for name, data in run_dir(output_dir, overrides).items() if name not in DOCUMENTS}


@pytest.fixture(scope="module", autouse=True)
def ray_session():
    ray.init(num_cpus=2, include_dashboard=False, namespace="distill-tests")
    yield
    ray.shutdown()


def same_as_local(tmp_path: Path, overrides: list[str]) -> dict[str, bytes]:
    local = data_files(tmp_path / "local", [*overrides, *LOCAL])
    on_ray = data_files(tmp_path / "ray", [*overrides, *RAY])
    assert local.keys() == on_ray.keys()
    for name in local:
        assert local[name] == on_ray[name], f"{name} differs between executor=local and executor=ray"
    assert_manifests_match(tmp_path / "local" / "manifest.json", tmp_path / "ray" / "manifest.json")
    return on_ray


def assert_manifests_match(local_path: Path, ray_path: Path) -> None:
    local, on_ray = json.loads(local_path.read_bytes()), json.loads(ray_path.read_bytes())
    assert on_ray["executor"]["kind"] == "ray"
    assert on_ray["executor"]["ray_version"] == ray.__version__
    assert on_ray["executor"]["resources"]["CPU"] == 2
    for manifest in (local, on_ray):
        for key in MANIFEST_MAY_DIFFER:
            manifest.pop(key)
        manifest["config"].pop("executor")
        manifest["choices"].pop("executor", None)
        manifest["outputs"] = [entry for entry in manifest["outputs"] if entry["path"] not in DOCUMENTS]
    assert local == on_ray


@pytest.mark.parametrize("task", ["sft", "preference paired", "rollout"])
def test_the_bundled_sample_gives_the_same_bytes_on_ray(tmp_path, task):
    same_as_local(tmp_path, SAMPLE_TASKS[task])


def test_the_lakehouse_fixture_gives_the_same_bytes_on_ray(tmp_path):
    same_as_local(tmp_path, ["source=lakehouse", f"source.root={FIXTURE}", "split=none", "task=preference_category"])


def test_columnar_sources_and_parquet_output_give_the_same_bytes_on_ray(tmp_path):
    pytest.importorskip("lance")
    from test_lance import VERSION_1, VERSION_2, write_version
    from test_parquet import sessions, write_parquet_rows

    store = tmp_path / "context.lance"
    write_version(store, VERSION_1)
    write_version(store, VERSION_2, mode="append")
    same_as_local(tmp_path / "lance", ["source=lance", f"source.uri={store}", "source.version=1", "split=none"])
    source = write_parquet_rows(tmp_path / "in" / "log.parquet", sessions(12))
    same_as_local(tmp_path / "parquet", ["source=parquet", f"source.path={source}", "output.format=parquet"])


def thorough(corpus: Path) -> list[str]:
    return [f"source.path={corpus / 'logs.jsonl'}", "curation=thorough",
            f"++curation.steps.decontaminate.eval_sets=[{corpus / 'evals' / 'heldout.jsonl'}]"]


@pytest.mark.parametrize("task", [[], ["task=preference"], ["task=rollout"]])
def test_a_corpus_with_copies_leaks_and_bad_rows_gives_the_same_bytes_on_ray(tmp_path, corpus, task):
    files = same_as_local(tmp_path, [*thorough(corpus), *task])
    rows = [json.loads(line) for line in files["quarantine.jsonl"].splitlines()]
    reasons = {row["reason"] for row in rows}
    assert {"invalid_json", "invalid_utf8", "schema_violation", "duplicate", "near_duplicate", "contaminated"} <= reasons
    # Some near-duplicate conversation was decided against a survivor in another partition.
    crossing = [
        row for row in rows if row["reason"] == "near_duplicate"
        and hash64(row["record"]["session_id"]) % 3 != hash64(row["detail"]["duplicate_of"]) % 3
    ]
    assert crossing


def test_record_scope_dedup_and_highest_reward_survivors_are_the_same_on_ray(tmp_path, corpus):
    same_as_local(tmp_path, [
        *thorough(corpus), "++curation.steps.exact_dedup.scope=record", "++curation.steps.near_dedup.scope=record",
        "++curation.steps.near_dedup.keep=highest_reward", "++curation.steps.near_dedup.threshold=0.5",
    ])


def test_a_worker_killed_mid_task_is_retried_and_the_outputs_are_unchanged(tmp_path, monkeypatch):
    faults = tmp_path / "faults"
    faults.mkdir()
    monkeypatch.setenv(FAULT_ENV, f"map:hang:{faults}")
    killed: list[int] = []

    def kill_the_worker() -> None:
        pid_file = faults / "pid"
        deadline = time.monotonic() + 120
        while not pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        pid = int(pid_file.read_text())
        # Mid-task: a fused read-and-chain task with its first batch mapped and that batch's spills open under
        # temporary names.
        open_spills = list((tmp_path / "ray" / ".distill-work").rglob(f"*.{pid}.tmp"))
        os.kill(pid, signal.SIGKILL)
        killed.append((pid, len(open_spills)))

    killer = threading.Thread(target=kill_the_worker, daemon=True)
    killer.start()
    on_ray = data_files(tmp_path / "ray", RAY)
    killer.join(timeout=5)
    assert killed, "no map task waited to be killed"
    (pid, open_spills), = killed
    assert pid != os.getpid() and open_spills > 0
    assert on_ray == data_files(tmp_path / "local", LOCAL)


def test_the_records_reach_the_reduce_through_ray_data_and_a_killed_reduce_worker_is_retried(tmp_path, monkeypatch):
    """The map ran as a Ray Data pipeline of one read task per shard, and while a reduce task runs no part spill
    (nor a piece of a shard's key spills) exists: the records wait in Ray's object store, and a reduce task whose
    worker is SIGKILLed is run again from them."""
    faults = tmp_path / "faults"
    faults.mkdir()
    monkeypatch.setenv(FAULT_ENV, f"reduce:hang:{faults}")
    seen: dict[str, Any] = {}

    def look_then_kill() -> None:
        pid_file = faults / "pid"
        deadline = time.monotonic() + 120
        while not pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        work = tmp_path / "ray" / ".distill-work"
        seen["parts"] = [path for path in (work / "parts").rglob("*") if path.is_file()]
        seen["pieces"] = [path for path in work.rglob("*.spill") if path.name.count(".") > 1]
        seen["shards"] = len(list((work / "quarantine").glob("map-*.spill")))
        seen["pid"] = int(pid_file.read_text())
        os.kill(seen["pid"], signal.SIGKILL)

    killer = threading.Thread(target=look_then_kill, daemon=True)
    killer.start()
    on_ray = data_files(tmp_path / "ray", RAY)
    killer.join(timeout=5)
    assert seen.get("pid") not in (None, os.getpid()), "no reduce task waited to be killed"
    assert seen["parts"] == [] and seen["pieces"] == []
    executor = json.loads((tmp_path / "ray" / "manifest.json").read_bytes())["executor"]
    assert seen["shards"] > 1 and executor["map"] == {"engine": "ray.data", "read_tasks": seen["shards"]}
    assert executor["reduce"]["engine"] == "ray.data"
    assert on_ray == data_files(tmp_path / "local", LOCAL)


def test_many_batches_per_shard_give_the_same_bytes_on_ray(tmp_path, corpus):
    # Each shard is mapped as many batches: many pieces of each key spill to join, many rows per partition to order.
    same_as_local(tmp_path, [*thorough(corpus), "batch_size=64"])


def test_a_local_run_killed_mid_map_resumes_on_ray_with_the_same_bytes(tmp_path, corpus):
    # The shards the local run finished are read back from its part spills, the others come through Ray Data.
    overrides = [f"source.path={corpus / 'logs.jsonl'}", "executor.partitions=3", "executor.shard_mb=0.3"]
    killed = tmp_path / "killed"
    done = subprocess.run(
        [sys.executable, "-m", "distill", *overrides, "executor.workers=2", f"hydra.run.dir={killed}"],
        cwd=tmp_path, capture_output=True, text=True, start_new_session=True,
        env={**os.environ, "DISTILL_TEST_KILL_AFTER": "map:2"},
    )
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    resumed = data_files(killed, [*overrides, "executor=ray", "resume=true"])
    resumed.pop("distill.log")  # the killed CLI run's own log
    assert resumed == data_files(tmp_path / "local", [*overrides, *LOCAL])


def test_an_exception_raised_once_in_a_task_is_retried(tmp_path, monkeypatch):
    faults = tmp_path / "faults"
    faults.mkdir()
    monkeypatch.setenv(FAULT_ENV, f"reduce:raise:{faults}")
    on_ray = data_files(tmp_path / "ray", RAY)
    assert (faults / "reduce.fired").exists()
    assert on_ray == data_files(tmp_path / "local", LOCAL)


def test_an_error_a_user_can_fix_raised_in_a_task_reaches_the_driver_as_one_line():
    @ray.remote(max_retries=0)
    def fails() -> None:
        raise ConfigError(["source.path: no file matches x.jsonl"])

    with pytest.raises(ConfigError) as raised:
        get(fails.remote())
    assert raised.value.problems == ["source.path: no file matches x.jsonl"]
    assert type(raised.value) is ConfigError


def test_an_error_a_user_can_fix_raised_in_a_ray_data_task_reaches_the_driver_as_itself(tmp_path):
    # A group larger than a worker's share of the memory budget stops the reduce with an error naming the fix.
    with pytest.raises(DistillError, match="raise executor.memory_gb") as raised:
        data_files(tmp_path / "ray", [*RAY, "executor.memory_gb=0.00001"])
    assert type(raised.value) is DistillError and "\n" not in str(raised.value)


def test_a_multirun_sweep_runs_each_job_on_ray(tmp_path):
    sweep = tmp_path / "sweep"
    done = run_cli(["-m", "executor=ray", "executor.workers=1", "split.seed=0,1", f"hydra.sweep.dir={sweep}"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    for job in ("0", "1"):
        manifest = json.loads((sweep / job / "manifest.json").read_bytes())
        assert manifest["executor"]["kind"] == "ray" and manifest["executor"]["resources"]["CPU"] == 1
    local = data_files(tmp_path / "local", ["split.seed=1", *LOCAL])
    for name, data in local.items():
        assert (sweep / "1" / name).read_bytes() == data


def one_line_error(done: Any) -> str:
    lines = [line for line in done.stderr.splitlines() if line.startswith("distill: error:")]
    assert done.returncode == 2 and len(lines) == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    return lines[0]


@pytest.mark.parametrize("where", ["override", "RAY_ADDRESS"])
def test_an_unreachable_cluster_address_is_a_one_line_error(tmp_path, monkeypatch, where):
    args = ["executor=ray", f"hydra.run.dir={tmp_path / 'out'}"]
    if where == "override":
        args.append("executor.address=ray://127.0.0.1:1")
    else:
        monkeypatch.setenv("RAY_ADDRESS", "ray://127.0.0.1:1")
    done = run_cli(args, tmp_path)
    assert "executor.address: cannot reach a Ray cluster at 'ray://127.0.0.1:1'" in one_line_error(done)


def session_processes(session: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if entry.name.isdigit() and int(stat[stat.rindex(")") + 2 :].split()[3]) == session:
            found.append(int(entry.name))
    return found


def test_ctrl_c_stops_the_job_and_its_local_ray_without_a_traceback(tmp_path):
    faults = tmp_path / "faults"
    faults.mkdir()
    env = {**os.environ, FAULT_ENV: f"map:hang:{faults}"}
    command = [sys.executable, "-m", "distill", "executor=ray", "executor.workers=1", f"hydra.run.dir={tmp_path / 'out'}"]
    # Its own session, as a terminal's foreground job: Ctrl-C is SIGINT to the whole process group.
    with ctrl_c_reaches_children():
        process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not (faults / "pid").exists() and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.1)
        assert (faults / "pid").exists(), "the map task never started"
        os.killpg(process.pid, signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
        assert process.returncode == 130, stderr[-2000:]
        assert "distill: error: interrupted" in stderr and "Traceback" not in stderr
        deadline = time.monotonic() + 30
        while session_processes(process.pid) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not session_processes(process.pid), "Ray processes outlived the interrupted run"
    finally:
        for pid in session_processes(process.pid):
            os.kill(pid, signal.SIGKILL)


def test_the_ray_executor_without_the_extra_is_a_one_line_error(tmp_path):
    # `ray` made unimportable: what a machine without `pip install 'distill[ray]'` sees.
    script = "import sys; sys.modules['ray'] = None; from distill.cli import main; main()"
    done = subprocess.run(
        [sys.executable, "-c", script, "executor=ray", f"hydra.run.dir={tmp_path / 'out'}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert "pip install 'distill[ray]'" in one_line_error(done)
