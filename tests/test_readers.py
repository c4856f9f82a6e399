"""The trainers' own readers on what distill writes from the bundled sample: LLaMA-Factory's dataset loader and
converter, verl's RLHFDataset. Each lives in its own virtualenv (their pinned dependencies conflict with TRL's),
named by DISTILL_LLAMAFACTORY_PYTHON / DISTILL_VERL_PYTHON (`.ci/run` builds them); without one, that test is
skipped and only the key checks below run. The key checks always run: they hold the rows to what the readers'
sources read, so a file that passes them is not silently skipped by the reader.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from helpers import read_jsonl, run_pipeline
from lakehouse_fixture import run_lakehouse
from test_flavours import read_rows, sample_with_answers

READERS = Path(__file__).parent / "readers"

LLAMAFACTORY_RUNS = {
    # name: (overrides, LLaMA-Factory stage, dataset name in dataset_info.json)
    "sft": (["task=sft"], "sft", "distill_sft"),
    "dpo": (["task=preference"], "dpo", "distill_preference"),
    "kto": (["task=preference", "task.form=unpaired", "task.min_reward=0.5"], "kto", "distill_preference"),
    "alpaca": (["task=sft", "task.format=instruction"], "sft", "distill_sft"),
}


@pytest.fixture(scope="module")
def llamafactory_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("llamafactory")
    runs = {}
    for name, (overrides, stage, dataset) in LLAMAFACTORY_RUNS.items():
        args = ["output.flavor=llamafactory", "split=none", *overrides]
        result = run_lakehouse(root / name, args) if name == "alpaca" else run_pipeline(root / name, args)
        lines = read_jsonl(result.output_dir / result.files[0])
        runs[name] = {"run_dir": str(result.output_dir), "stage": stage, "name": dataset, "expected": len(lines)}
    return runs


@pytest.fixture(scope="module")
def verl_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("verl")
    result = run_pipeline(
        root / "out",
        ["output.flavor=verl", "task=rollout", f"source.path={sample_with_answers(root)}", "+source.fields.ground_truth=answer"],
    )
    return result.output_dir


def run_reader(variable: str, script: str, specs: list[dict]) -> list[dict]:
    python = os.environ.get(variable)
    if not python:
        pytest.skip(f"{variable} is not set (.ci/run builds the reader's virtualenv)")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    done = subprocess.run(
        [python, str(READERS / script), json.dumps(specs)], capture_output=True, text=True, env=env, timeout=600
    )
    reports = [line for line in done.stdout.splitlines() if line.startswith("READER-REPORT ")]
    assert reports, done.stderr[-4000:]
    return json.loads(reports[-1].removeprefix("READER-REPORT "))


def test_llamafactory_loads_converts_and_tokenizes_every_row(llamafactory_runs):
    reports = run_reader("DISTILL_LLAMAFACTORY_PYTHON", "llamafactory_reader.py", list(llamafactory_runs.values()))
    for report in reports:
        assert report["ok"], report
        assert report["rows"] > 0 and report["broken"] == []


def test_verl_rlhf_dataset_reads_every_prompt_and_its_ground_truth(verl_run):
    specs = [
        {"path": str(path), "expected": len(read_rows(path))} for path in sorted(verl_run.glob("rollout*.parquet"))
    ]
    assert sum(spec["expected"] for spec in specs) > 0
    for report in run_reader("DISTILL_VERL_PYTHON", "verl_reader.py", specs):
        assert report["ok"], report


# --- The keys and types the readers require, from their sources --------------------------------------------------


def test_llamafactory_rows_hold_what_its_sharegpt_converter_reads(llamafactory_runs):
    """LLaMA-Factory's src/llamafactory/data/converter.py, SharegptDatasetConverter.__call__: reads
    example[columns.messages] (a list of {role_tag: content_tag}), example[columns.system] when the column is named,
    the tags human/observation at odd positions and gpt/function_call at even ones (else "Invalid role tag", row
    skipped), an even count (odd with ranking), `kto_tag` a bool, chosen/rejected dicts tagged gpt/function_call;
    FunctionFormatter (formatter.py) json.loads a function_call value into [{name, arguments}]."""
    for name, run in llamafactory_runs.items():
        run_dir = Path(run["run_dir"])
        entry = json.loads((run_dir / "dataset_info.json").read_text())[run["name"]]
        rows = read_jsonl(run_dir / entry["file_name"])
        assert rows
        if entry["formatting"] == "alpaca":
            assert all(isinstance(row[entry["columns"][key]], str) for row in rows for key in ("prompt", "query", "response"))
            continue
        columns, tags = entry["columns"], entry["tags"]
        ranking = entry.get("ranking", False)
        for row in rows:
            assert all(column in row for column in columns.values()), name
            turns = row[columns["messages"]]
            assert isinstance(row[columns["system"]], str)
            for position, turn in enumerate(turns):
                allowed = (tags["user_tag"], tags["observation_tag"]) if position % 2 == 0 else (tags["assistant_tag"], tags["function_tag"])
                assert turn[tags["role_tag"]] in allowed and isinstance(turn[tags["content_tag"]], str)
                if turn[tags["role_tag"]] == tags["function_tag"]:
                    calls = json.loads(turn[tags["content_tag"]])
                    assert all(set(call) == {"name", "arguments"} for call in calls)
            assert len(turns) % 2 == (1 if ranking else 0)
            if ranking:
                for side in ("chosen", "rejected"):
                    assert row[columns[side]][tags["role_tag"]] in (tags["assistant_tag"], tags["function_tag"])
            if "kto_tag" in columns:
                assert isinstance(row[columns["kto_tag"]], bool)


def test_verl_rows_hold_what_its_rl_dataset_and_reward_managers_read(verl_run):
    """verl's verl/utils/dataset/rl_dataset.py: RLHFDataset reads the `prompt` column (config prompt_key) as chat
    messages and applies the chat template to it, reads extra_info["index"] (and tools_kwargs, interaction_kwargs
    with defaults) and row["data_source"]; the reward managers (verl/workers/reward_manager/naive.py) read
    non_tensor_batch["reward_model"]["ground_truth"] and ["data_source"]."""
    rows = [row for path in sorted(verl_run.glob("rollout*.parquet")) for row in read_rows(path)]
    assert rows
    for row in rows:
        assert isinstance(row["data_source"], str) and row["data_source"]
        assert row["prompt"] and all(isinstance(m["role"], str) and isinstance(m["content"], str) for m in row["prompt"])
        assert isinstance(row["reward_model"]["ground_truth"], str) and row["reward_model"]["style"] == "rule"
        assert isinstance(row["extra_info"]["index"], int) and isinstance(row["ability"], str)
