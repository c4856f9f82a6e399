"""Category pairing (`build_category_pairs`): accepted over rejected (else partial) within one group, with every
record of the group ending in a pair or one quarantine reason; and the lakehouse_preference experiment."""

from __future__ import annotations

from collections import Counter

import pytest

from distill.grouping import Group
from distill.record import Record
from distill.tasks.base import TaskOutput
from distill.tasks.category_pairing import build_category_pairs
from distill.validation import schema_errors
from lakehouse_fixture import dataset_lines, quarantine_by_record, run_lakehouse, schema_violations


def record(record_id: str, category: str | None, text: str, **fields) -> Record:
    metadata = {"reasons": fields.pop("reasons")} if "reasons" in fields else {}
    return Record(id=record_id, run_id=fields.pop("run_id", record_id), task_id="scrum:a.py", role="assistant",
                  category=category, text=text, metadata=metadata, **fields)


def pair_up(records: list[Record], cap: int = 5) -> tuple[bool, TaskOutput]:
    output = TaskOutput()
    paired = build_category_pairs(Group("scrum:a.py", records), max_pairs_per_group=cap, output=output)
    return paired, output


def pairs(output: TaskOutput) -> list[tuple[str, str]]:
    return [(e.records[0].id, e.records[1].id) for e in output.examples]


def reasons(output: TaskOutput) -> dict[str, str]:
    return {rec.id: drop.reason.value for _, rec, drop in output.drops}


def assert_ledger(records: list[Record], output: TaskOutput) -> None:
    """Every record of the group is in a pair or has exactly one drop, never both."""
    used = {r.id for e in output.examples for r in e.records}
    dropped = Counter(rec.id for _, rec, _ in output.drops)
    assert all(n == 1 for n in dropped.values())
    assert used.isdisjoint(dropped) and used | set(dropped) == {r.id for r in records}


def test_accepted_pairs_with_every_rejected_and_the_line_shape():
    records = [
        record("a", "accepted", "Good review", source_files=["src/a.py"], reasons=["x" * 100]),
        record("r1", "rejected", "Bad review", reasons=["missed everything"]),
        record("r2", "rejected", "Worse review"),
        record("p", "partially_accepted", "Half review"),
    ]
    paired, output = pair_up(records)
    assert paired is True
    assert pairs(output) == [("a", "r1"), ("a", "r2")]
    assert reasons(output) == {"p": "unused_candidate"}
    line = output.examples[0].line
    assert line["prompt"] == [{"role": "user", "content": "Task: scrum:a.py · file=src/a.py"}]
    assert line["chosen"] == [{"role": "assistant", "content": "Good review"}]
    assert line["rejected"] == [{"role": "assistant", "content": "Bad review"}]
    assert line["reason"] == f"chosen is accepted ({'x' * 80}); rejected is rejected (missed everything)"
    assert (line["chosen_run_id"], line["rejected_run_id"]) == ("a", "r1")
    assert line["provenance"]["record_ids"] == ["a", "r1"]
    assert line["provenance"]["categories"] == ["accepted", "rejected"]
    assert line["id"].startswith("pref-")
    assert schema_violations("preference_category_line", [e.line for e in output.examples]) == []
    assert_ledger(records, output)


def test_partial_is_the_opponent_only_when_there_is_no_valid_rejected_pair():
    records = [record("a", "accepted", "Full answer"), record("p", "partially_accepted", "Half answer"),
               record("r", "rejected", "full   ANSWER")]  # identical to the accepted text once normalised
    paired, output = pair_up(records)
    assert paired and pairs(output) == [("a", "p")]
    assert reasons(output) == {"r": "unused_candidate"}
    assert output.examples[0].line["reason"].startswith("chosen is accepted (no rationale logged); rejected is partially")
    assert_ledger(records, output)


def test_the_cap_leaves_candidates_unused():
    records = [record(f"a{i}", "accepted", f"accepted {i}") for i in range(3)] + [
        record(f"r{i}", "rejected", f"rejected {i}") for i in range(2)
    ]
    paired, output = pair_up(records, cap=2)
    assert pairs(output) == [("a0", "r0"), ("a0", "r1")]
    assert reasons(output) == {"a1": "unused_candidate", "a2": "unused_candidate"}
    assert_ledger(records, output)


def test_groups_without_a_valid_pair():
    only_accepted = [record("a", "accepted", "x"), record("b", "accepted", "y"), record("n", None, "z")]
    paired, output = pair_up(only_accepted)
    assert paired is False and output.examples == []
    assert reasons(output) == {"a": "no_pair_signal", "b": "no_pair_signal", "n": "no_pair_signal"}

    identical = [record("a", "accepted", "Same text"), record("r", "rejected", "same  text")]
    paired, output = pair_up(identical)
    assert paired is False
    assert reasons(output) == {"a": "invalid_preference_pairing", "r": "invalid_preference_pairing"}

    empty = [record("a", "accepted", "fine"), record("r", "rejected", "  "), record("h", "needs_human_review", "?")]
    paired, output = pair_up(empty)
    assert paired is False
    assert reasons(output) == {"a": "invalid_preference_pairing", "r": "invalid_preference_pairing",
                               "h": "no_pair_signal"}
    for records in (only_accepted, identical, empty):
        _, output = pair_up(records)
        assert_ledger(records, output)


def test_a_run_is_never_paired_with_itself():
    records = [record("a", "accepted", "v2 of the run", run_id="run-1"),
               record("r", "rejected", "v1 of the run", run_id="run-1")]
    paired, output = pair_up(records)
    assert paired is False
    assert reasons(output) == {"a": "self_pairing", "r": "self_pairing"}

    records.append(record("r2", "rejected", "another run's answer", run_id="run-2"))
    paired, output = pair_up(records)
    assert pairs(output) == [("a", "r2")]
    assert reasons(output) == {"r": "unused_candidate"}
    assert_ledger(records, output)


def test_pairs_never_cross_groups():
    output = TaskOutput()
    assert build_category_pairs(Group("t1", [record("a", "accepted", "x")]), max_pairs_per_group=5, output=output) is False
    assert build_category_pairs(Group("t2", [record("r", "rejected", "y")]), max_pairs_per_group=5, output=output) is False
    assert output.examples == []


def test_ids_are_content_hashes():
    records = [record("a", "accepted", "Good"), record("r", "rejected", "Bad")]
    first, second = pair_up(records)[1], pair_up(list(records))[1]
    assert [e.id for e in first.examples] == [e.id for e in second.examples]
    changed = pair_up([records[0], record("r", "rejected", "Bad!")])[1]
    assert changed.examples[0].id != first.examples[0].id


def test_the_schema_rejects_lines_that_break_the_firewall():
    _, output = pair_up([record("a", "accepted", "Good"), record("r", "rejected", "Bad")])
    line = output.examples[0].line
    assert schema_errors("preference_category_line", line) == []
    swapped = {**line, "provenance": {**line["provenance"], "categories": ["rejected", "accepted"],
                                      "chosen_category": "rejected", "rejected_category": "accepted"}}
    review = {**line, "provenance": {**line["provenance"], "categories": ["accepted", "needs_human_review"],
                                     "rejected_category": "needs_human_review"}}
    itself = {**line, "provenance": {**line["provenance"], "record_ids": ["a", "a"]}}
    for bad in (swapped, review, itself):
        assert schema_errors("preference_category_line", bad) != []
        assert schema_violations("preference_category_line", [bad]) != []


def test_lakehouse_preference_experiment(tmp_path):
    pytest.importorskip("distill.tasks.preference")
    result = run_lakehouse(tmp_path, ["+experiment=lakehouse_preference"])
    lines = dataset_lines(result, "preference")
    assert lines and schema_violations("preference_category_line", lines) == []
    assert all(line["chosen_run_id"] != line["rejected_run_id"] for line in lines)
    assert all(len(set(line["provenance"]["record_ids"])) == 2 for line in lines)
    assert {("run-001", "run-002"), ("run-001", "run-003"), ("run-004", "run-005")} <= {
        tuple(line["provenance"]["record_ids"]) for line in lines
    }
    quarantined = quarantine_by_record(result)
    assert quarantined["run-013"]["reason"] == "no_pair_signal"  # permit:P-100 has only an accepted run
    assert quarantined["run-007"]["reason"] == "invalid_preference_pairing"  # identical to run-008 once normalised
    assert result.manifest["task_counts"]["insufficient_pair_groups"] >= 1
    counts = result.manifest["counts"]
    assert counts["exported_records"] + counts["quarantined_rows"] == counts["input_rows"]
