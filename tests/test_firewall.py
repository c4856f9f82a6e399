"""The firewall: no override short of an explicit opt-in lets a forbidden category into a dataset, and a line that
gets past the task's gate anyway is stopped by the output schema at write time (`schema_violation`)."""

from __future__ import annotations

import itertools

import pytest

from distill.config import build_settings
from distill.errors import ConfigError
from distill.tasks.conversation import Firewall
from helpers import compose_config
from lakehouse_fixture import (
    ACCEPTED, FIXTURE, NEVER_SFT, PARTIAL, REJECTED, REVIEW, compose_lakehouse, dataset_lines, quarantine_by_record,
    run_lakehouse, run_with_task_values, schema_violations,
)

DEFAULT_STEPS = sorted(compose_config()["curation"]["steps"])
CURATIONS = {
    "none": ["curation=none"],
    "default": [],
    **{f"without_{step}": [f"~curation.steps.{step}"] for step in DEFAULT_STEPS},
    # A curation gate that lets every category through cannot open the task's firewall.
    "permissive_gate": ["++curation.steps.category_gate.allowed=[accepted,partially_accepted,rejected,needs_human_review]"],
}
SFT_FORMATS = {
    "chat_per_record": ["task=sft"],
    "chat_per_task": ["task=sft", "group=task_id"],  # conversations mixing accepted and forbidden turns
    "instruction": ["+experiment=lakehouse_instruction"],
}
FLAGS = [False, True]


def exported_ids(lines):
    return {record_id for line in lines for record_id in line["provenance"]["record_ids"]}


def categories(lines):
    return {category for line in lines for category in line["provenance"]["categories"]}


def runs_over_flags(tmp_path, config, opt_in: str):
    """One run per combination of the task's opt-in flag and require_category: (opt-in value, what was set, result)."""
    for opted_in, require_category in itertools.product(FLAGS, FLAGS):
        values = {opt_in: opted_in, "require_category": require_category}
        yield opted_in, values, run_with_task_values(tmp_path / f"{opted_in}-{require_category}", config, **values)


def sft_schema(format_name: str) -> str:
    return "sft_instruction_line" if format_name == "instruction" else "sft_chat_line"


@pytest.mark.parametrize("format_name", SFT_FORMATS)
@pytest.mark.parametrize("curation", CURATIONS)
def test_sft_never_exports_rejected_or_review_records(tmp_path, format_name, curation):
    config = compose_lakehouse([*SFT_FORMATS[format_name], *CURATIONS[curation]])
    for include_partial, overrides, result in runs_over_flags(tmp_path, config, "include_partial"):
        lines = dataset_lines(result, "sft")
        exported = exported_ids(lines)
        assert exported & NEVER_SFT == set(), overrides
        assert categories(lines) <= ({"accepted", "partially_accepted"} if include_partial else {"accepted"}), overrides
        assert exported & ACCEPTED, overrides  # the control: the run did export something
        assert bool(exported & PARTIAL) == include_partial, overrides
        assert schema_violations(sft_schema(format_name), lines) == []
        quarantined = quarantine_by_record(result)
        assert NEVER_SFT <= set(quarantined), overrides
        assert result.manifest["counts"]["exported_records"] == len(exported)


@pytest.mark.parametrize("curation", CURATIONS)
def test_rag_never_exports_rejected_and_review_only_on_request(tmp_path, curation):
    config = compose_lakehouse(["task=rag", *CURATIONS[curation]])
    for include_review, overrides, result in runs_over_flags(tmp_path, config, "include_review"):
        lines = dataset_lines(result, "rag")
        exported = exported_ids(lines)
        assert exported & REJECTED == set(), overrides
        assert exported >= REVIEW if include_review else exported & REVIEW == set(), overrides
        assert exported & PARTIAL and exported & ACCEPTED, overrides
        quarantined = quarantine_by_record(result)
        assert {quarantined[rid]["reason"] for rid in REJECTED if quarantined[rid]["step"] == "firewall"} == {
            "unsafe_rag_category"
        }
        assert schema_violations("rag_line", lines) == []


@pytest.mark.parametrize("task, option", [("sft", "include_review"), ("rag", "include_partial"), ("sft", "allow_rejected")])
def test_no_unknown_task_option_reaches_the_firewall(task, option):
    with pytest.raises(ConfigError) as error:
        build_settings(compose_config(["source=lakehouse", f"source.root={FIXTURE}", f"task={task}", f"++task.{option}=true"]))
    assert error.value.problems == [f"task.{option}: Extra inputs are not permitted"]


@pytest.mark.parametrize(
    "overrides, schema, forbidden",
    [
        (["task=sft", "task.include_partial=true"], "sft_chat_line", NEVER_SFT),
        (["task=sft", "task.include_partial=true", "group=task_id"], "sft_chat_line", NEVER_SFT),
        (["+experiment=lakehouse_instruction", "task.include_partial=true"], "sft_instruction_line", NEVER_SFT),
        (["task=rag", "task.include_review=true"], "rag_line", REJECTED),
    ],
)
def test_a_line_forced_past_the_gate_is_rejected_by_the_write_time_schema(tmp_path, monkeypatch, overrides, schema, forbidden):
    monkeypatch.setattr(Firewall, "check", lambda self, record, **_: None)  # the task's gate lets everything through
    task = schema.split("_")[0]  # the dataset file's name: sft, rag
    result = run_lakehouse(tmp_path, [*overrides, "curation=none"])
    lines = dataset_lines(result, task)
    assert lines, "the control: other lines are still written"
    assert exported_ids(lines) & forbidden == set()
    assert schema_violations(schema, lines) == []
    quarantined = quarantine_by_record(result)
    for record_id in sorted(forbidden):
        row = quarantined[record_id]
        assert (row["step"], row["reason"]) == ("write", "schema_violation"), record_id
        assert row["detail"]["example_id"].startswith(f"{task}-")
    assert all(not stage["dropped"] for stage in result.manifest["stages"] if stage["step"] == "firewall")
