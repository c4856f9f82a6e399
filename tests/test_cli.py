"""The command line, in subprocesses, exactly as a user types it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO, read_jsonl, run_cli, write_jsonl


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    rows = []
    for s in range(12):
        rows.append({"id": f"u{s}", "session_id": f"s{s}", "role": "user", "text": f"question {s}", "created_at": s * 10})
        rows.append({"id": f"a{s}", "session_id": f"s{s}", "role": "assistant", "text": f"answer {s}", "created_at": s * 10 + 1,
                     "reward": 0.1 if s % 2 else 0.9, "category": "accepted"})
    rows.append(b"{truncated")
    return write_jsonl(root / "logs.jsonl", rows)


def test_default_run_uses_the_bundled_sample_and_prints_where_it_wrote(tmp_path):
    done = run_cli([f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"wrote {tmp_path / 'run'}" in done.stdout
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["inputs"][0]["path"].endswith("agent_sessions.jsonl")
    assert manifest["counts"]["examples"] > 0
    assert manifest["choices"]["source"] == "jsonl" and manifest["choices"]["task"] == "sft"
    assert "Traceback" not in done.stderr


def test_the_console_script_runs_from_another_directory(tmp_path, logs):
    elsewhere = tmp_path / "somewhere" / "else"
    elsewhere.mkdir(parents=True)
    done = run_cli([f"source.path={logs}", "hydra.run.dir=out"], cwd=elsewhere, module=False)
    assert done.returncode == 0, done.stderr
    assert (elsewhere / "out" / "sft.train.jsonl").exists()


def test_print_the_composed_config(tmp_path):
    done = run_cli(["--cfg", "job"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "exact_dedup:" in done.stdout and "kind: sft" in done.stdout


def test_multirun_writes_one_directory_per_job(tmp_path, logs):
    done = run_cli(["-m", f"source.path={logs}", "split.seed=1,2,3", f"hydra.sweep.dir={tmp_path / 'sweep'}"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    seeds = [json.loads((tmp_path / "sweep" / str(n) / "manifest.json").read_text())["split"]["seed"] for n in range(3)]
    assert seeds == [1, 2, 3]


def test_step_parameter_sweep(tmp_path, logs):
    done = run_cli(
        ["-m", f"source.path={logs}", "++curation.steps.min_reward.threshold=0.0,0.5", f"hydra.sweep.dir={tmp_path / 'sweep'}"],
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    examples = [json.loads((tmp_path / "sweep" / str(n) / "manifest.json").read_text())["counts"]["examples"] for n in range(2)]
    assert examples == [12, 6]


def test_checked_in_experiment(tmp_path, logs):
    done = run_cli([f"source.path={logs}", "+experiment=sft_baseline", f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["config"]["curation"]["steps"]["min_reward"] == {"threshold": 0.5}
    assert manifest["split"]["seed"] == 13


@pytest.mark.parametrize(
    ("overrides", "order"),
    [
        (["++curation.steps.min_reward.threshold=0.5"], ["lifecycle", "non_empty_text", "exact_dedup", "min_reward"]),
        (["~curation.steps.exact_dedup"], ["lifecycle", "non_empty_text"]),
        (["curation.order=[exact_dedup,lifecycle]"], ["exact_dedup", "lifecycle", "non_empty_text"]),
        (["curation=none"], []),
        (["++curation.steps.strict.type=min_reward", "++curation.steps.strict.threshold=0.8"],
         ["lifecycle", "non_empty_text", "exact_dedup", "strict"]),
    ],
)
def test_override_forms_change_the_chain(tmp_path, logs, overrides, order):
    done = run_cli([f"source.path={logs}", *overrides, f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["choices"]["curation.order"] == order


def test_plus_fails_when_the_step_is_already_in_the_chain(tmp_path, logs):
    done = run_cli([f"source.path={logs}", "+curation.steps.exact_dedup.scope=record"], cwd=tmp_path)
    assert done.returncode != 0
    assert "exact_dedup" in done.stderr and "Traceback" not in done.stderr


def test_quoted_delimiter_override(tmp_path):
    rows = [
        {"id": "1", "external_id": "doc-7#chunk-1", "role": "assistant", "text": "a"},
        {"id": "2", "external_id": "doc-7#chunk-2", "role": "assistant", "text": "b"},
        {"id": "3", "external_id": "doc-8#chunk-1", "role": "assistant", "text": "c"},
    ]
    path = write_jsonl(tmp_path / "ext.jsonl", rows)
    args = [f"source.path={path}", "group=external_id_prefix", "group.delimiter='#'", "split=none", "hydra.run.dir=run"]
    done = run_cli(args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert len(read_jsonl(tmp_path / "run" / "sft.jsonl")) == 2


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("group=bogus", "group"),
        ("split.eval_fraction=-0.1", "split.eval_fraction"),
        ("++curation.steps.bogus.threshold=1", "curation.steps.bogus"),
        ("++curation.steps.min_reward.threshold=abc", "curation.steps.min_reward.threshold"),
        ("source.path=/no/such/logs.jsonl", "source.path"),
        ("task.on_gap=sometimes", "task.on_gap"),
        ("++curation.steps.bad.type=builtins.eval", "curation.steps.bad.type"),
        ("curation.order=[nope]", "curation.order"),
        ("batch_size=0", "batch_size"),
        ("batch_size=99999999999999999999", "batch_size"),
        ("++curation.steps.min_reward.threshold=18446744073709551616", "curation.steps.min_reward.threshold"),
        ("executor.workers=100000", "workers=100000: at most"),
    ],
)
def test_bad_overrides_exit_non_zero_with_one_line_naming_the_key(tmp_path, override, key):
    done = run_cli([override, "hydra.run.dir=run"], cwd=tmp_path)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert key in done.stderr, done.stderr
    assert not (tmp_path / "run" / "manifest.json").exists()


def readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text("utf-8")
    block = re.search(r"<!-- cli-examples -->\s*```(?:bash|sh)?\n(.*?)```", text, re.S)
    assert block, "README.md lost its tested examples block"
    return [line.strip() for line in block.group(1).splitlines() if line.strip().startswith("python -m distill")]


@pytest.mark.parametrize("command", readme_commands())
def test_every_override_example_in_the_readme_runs(tmp_path, command):
    import shlex

    args = shlex.split(command, comments=True)[3:]
    out = "hydra.sweep.dir=sweep" if "-m" in args else "hydra.run.dir=run"
    done = run_cli([*args, out], cwd=tmp_path)
    assert done.returncode == 0, f"{command}\n{done.stderr}"
    assert "Traceback" not in done.stderr
    manifests = list(Path(tmp_path).rglob("manifest.json"))
    assert manifests or "--cfg" in args


def test_long_inputs_show_progress_on_stderr_and_keep_stdout_for_the_summary(tmp_path):
    rows = [{"id": f"r{i}", "session_id": f"s{i // 2}", "role": "user" if i % 2 == 0 else "assistant", "text": f"t{i}"}
            for i in range(12_000)]
    path = write_jsonl(tmp_path / "many.jsonl", rows)
    done = run_cli([f"source.path={path}", "hydra.run.dir=run"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "map: " in done.stderr and "12000 rows" in done.stderr and "rows/s" in done.stderr and "s left" in done.stderr
    assert "read 10000 rows" not in done.stdout and done.stdout.startswith("distill: 12000 rows in")


@pytest.fixture
def large_input(tmp_path: Path) -> Path:
    """A file just over one default shard (64 MiB), sparse: its size is all that is read."""
    path = tmp_path / "large.jsonl"
    with path.open("wb") as handle:
        handle.truncate(64 * 2**20 + 1)
    return path


@pytest.mark.parametrize(("extra", "cores", "starts"), [
    ([], 2, True),
    (["++executor.workers=2"], 1, True),
    (["executor.workers=1"], 2, False),
    (["executor=ray"], 2, False),
    (["executor.shard_mb=128"], 2, False),
    (["-m"], 2, False),
    (["--cfg", "job"], 2, False),
    (["executor.workers=abc"], 2, False),
    ([], 1, False),
])
def test_the_fork_server_starts_before_the_imports_only_for_a_large_local_run_the_command_line_shows(
    large_input, extra, cores, starts
):
    from distill.fork_server import needs_workers_early

    assert needs_workers_early([f"source.path={large_input}", *extra], cores) is starts


def test_no_early_fork_server_for_a_small_missing_or_unnamed_input(tmp_path, large_input):
    from distill.fork_server import needs_workers_early

    small = tmp_path / "small.jsonl"
    small.write_text("{}\n")
    assert not needs_workers_early([f"source.path={small}"], 2)
    assert not needs_workers_early([f"source.path={tmp_path / 'missing.jsonl'}"], 2)
    assert not needs_workers_early(["task=preference"], 2)
    assert needs_workers_early([f"source.path={large_input.parent}"], 2)  # a folder: the files right inside it


def test_workers_forked_from_an_early_fork_server_see_what_hydra_set_since(tmp_path, large_input):
    """`hydra.job.env_set` (and `hydra.job.chdir`) change the process only around the run, after the early start:
    a server started before that is started again, so its workers inherit what the run set."""
    script = (
        "import os, sys\n"
        "from concurrent.futures import ProcessPoolExecutor\n"
        "from distill import fork_server\n"
        f"fork_server.start_early(['source.path={large_input}', '++executor.workers=2'])\n"
        "assert fork_server._early is not None, 'not started early'\n"
        "os.environ['DISTILL_SET_BY_THE_RUN'] = 'yes'\n"
        "os.chdir(sys.argv[1])\n"
        "with ProcessPoolExecutor(1, mp_context=fork_server.fork_server_context()) as pool:\n"
        "    print(pool.submit(os.getenv, 'DISTILL_SET_BY_THE_RUN').result(), pool.submit(os.getcwd).result())\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["yes", str(tmp_path)]


def test_an_early_start_that_fails_or_cannot_count_cores_is_no_error(monkeypatch, large_input):
    from distill import fork_server

    def no_server() -> None:
        raise BlockingIOError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(fork_server, "fork_server_context", no_server)
    monkeypatch.setattr(fork_server, "_early", None)
    fork_server.start_early([f"source.path={large_input}", "++executor.workers=2"])  # left to the executor
    assert fork_server._early is None
    monkeypatch.delattr(fork_server.os, "sched_getaffinity")
    fork_server.start_early(["--help"])


def test_a_running_fork_server_is_taken_without_touching_the_ctrl_c_handler():
    """Every pool asks for the fork server; once it runs, nothing of the driver's SIGINT handling changes (setting
    SIGINT to SIG_IGN around a start that was not needed lost a whole-group Ctrl-C in 6 runs of 30 under load)."""
    script = (
        "import signal\n"
        "from distill import fork_server\n"
        "fork_server.fork_server_context()\n"
        "changed = []\n"
        "signal.signal = lambda *args: changed.append(args)\n"
        "fork_server.fork_server_context()\n"
        "print(len(changed))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "0"
