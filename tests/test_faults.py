"""Fuzz and faults: hostile rows, careless commands, a full disk, Ctrl-C and a second run never cost a dataset.

Every case ends in quarantine rows with a reason (exit 0, the ledger closed) or in one `distill: error:` line with
a non-zero exit; never a traceback, a stray temporary file, or a final file whose hash differs from the manifest.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import compose_config, ctrl_c_reaches_children, read_jsonl, run_cli, run_pipeline, write_jsonl
from step_helpers import apply, make_step, rec

from distill.config import build_settings
from distill.errors import ConfigError
from distill.output.files import OutputError, claim_run_directory, write_jsonl as write_output_jsonl

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


# --- checks every case shares -----------------------------------------------------------------------------------


def turn(id: str, session: str, role: str, text: str, second: int, **fields) -> dict:
    return {"id": id, "session_id": session, "role": role, "text": text, "created_at": 1767225600 + second,
            "category": "accepted", **fields}


def conversation(session: str, second: int = 0, answer: str | None = None, **assistant_fields) -> list[dict]:
    return [turn(f"{session}-u", session, "user", f"question of {session}", second),
            turn(f"{session}-a", session, "assistant", answer or f"answer of {session}", second + 1, **assistant_fields)]


def assert_finished_cleanly(run_dir: Path) -> dict:
    """The run's manifest closes the ledger and hashes every file as it is on disk; no temporary file is left."""
    manifest = json.loads((run_dir / "manifest.json").read_text("utf-8"))
    counts = manifest["counts"]
    assert counts["input_rows"] == counts["exported_records"] + counts["quarantined_rows"]
    for entry in manifest["outputs"]:
        assert hashlib.sha256((run_dir / entry["path"]).read_bytes()).hexdigest() == entry["sha256"], entry["path"]
    assert not stray_temporaries(run_dir)
    return manifest


def stray_temporaries(directory: Path) -> list[str]:
    return [str(p) for p in directory.rglob("*.tmp")] if directory.exists() else []


def assert_one_line_error(done: subprocess.CompletedProcess[str], *fragments: str) -> str:
    assert done.returncode != 0, done.stdout
    assert "Traceback" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("distill: error:")]
    assert len(errors) == 1, done.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def quarantine_by_id(run_dir: Path) -> dict[str, dict]:
    return {row["record_id"]: row for row in read_jsonl(run_dir / "quarantine.jsonl")}


def nested(levels: int) -> dict:
    value: dict = {}
    for _ in range(levels):
        value = {"a": value}
    return value


# --- 1-4: rows the record model cannot hold are quarantined, the run finishes -----------------------------------


def test_huge_numbers_are_kept_when_valid_and_quarantined_when_the_model_cannot_hold_them(tmp_path):
    rows = [
        *conversation("big-reward", 0, reward=1e20),
        *conversation("negative", 10, reward=-1e19),
        *conversation("max-float", 20, reward=1e308),
        *conversation("u64-reward", 30, reward=18446744073709551615),
        *conversation("tokens", 40, tokens_used=18446744073709551615),
        *conversation("rank", 50, rank=2**63),
    ]
    logs = write_jsonl(tmp_path / "logs.jsonl", rows)
    # A 30-digit integer: written verbatim, the way a log would carry it.
    with logs.open("a") as handle:
        handle.write('{"id": "digits-a", "session_id": "digits", "role": "assistant", "text": "x", '
                     '"reward": 123456789012345678901234567890, "tokens_used": 123456789012345678901234567890}\n')
    run_pipeline(tmp_path / "run", [f"source.path={logs}", "split=none"])
    manifest = assert_finished_cleanly(tmp_path / "run")
    quarantined = quarantine_by_id(tmp_path / "run")
    for record_id, field in [("tokens-a", "tokens_used"), ("rank-a", "rank"), ("digits-a", "tokens_used")]:
        assert quarantined[record_id]["reason"] == "schema_violation"
        assert quarantined[record_id]["errors"][0].startswith(field)
    exported = {line["messages"][-1]["content"]: line for line in read_jsonl(tmp_path / "run" / "sft.jsonl")}
    assert exported["answer of big-reward"]["reward"] == 1e20
    assert exported["answer of max-float"]["reward"] == 1e308
    stats = json.loads((tmp_path / "run" / "stats.json").read_text())
    assert stats["files"]["sft.jsonl"]["rewards"]["max"] == 1e308
    # tokens, rank, digits: the assistant turn is quarantined, so its conversation is no example.
    assert manifest["counts"]["examples"] == 4


@pytest.mark.parametrize("created_at", [1e20, -1e20, "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_a_time_outside_years_1_to_9999_is_a_schema_violation(tmp_path, created_at):
    rows = [*conversation("fine"), turn("bad", "bad", "user", "when?", 0) | {"created_at": created_at}]
    run_pipeline(tmp_path / "run", [f"source.path={write_jsonl(tmp_path / 'logs.jsonl', rows)}", "split=none"])
    assert_finished_cleanly(tmp_path / "run")
    row = quarantine_by_id(tmp_path / "run")["bad"]
    assert row["reason"] == "schema_violation" and "outside years 1-9999 UTC" in row["errors"][0]


def test_nesting_deeper_than_distill_can_write_is_a_schema_violation_and_its_row_is_still_written(tmp_path):
    rows = [
        *conversation("fine"),
        turn("deep", "deep", "assistant", "x", 5, metadata=nested(300)),
        # Quarantined for another reason (no category a record may hold), with a 300-level metadata.
        turn("deep-bad", "deep-bad", "assistant", "x", 6, category="nonsense", metadata=nested(300)),
        turn("deep-tools", "deep-tools", "assistant", "x", 7, tool_calls=[nested(300)]),
    ]
    run_pipeline(tmp_path / "run", [f"source.path={write_jsonl(tmp_path / 'logs.jsonl', rows)}", "split=none"])
    assert_finished_cleanly(tmp_path / "run")
    quarantined = quarantine_by_id(tmp_path / "run")
    assert quarantined["deep"]["errors"] == ["metadata: nested deeper than 200 levels"]
    assert quarantined["deep-tools"]["errors"] == ["tool_calls: nested deeper than 200 levels"]
    assert {quarantined[i]["reason"] for i in ("deep", "deep-bad", "deep-tools")} == {"schema_violation"}


def test_a_file_name_that_is_not_utf8_is_read_and_shown_percent_encoded(tmp_path):
    source = tmp_path / "logs"
    source.mkdir()
    write_jsonl(source / "good.jsonl", conversation("good"))
    bad = os.path.join(os.fsencode(source), b"bad-\xff.jsonl")
    with open(bad, "wb") as handle:
        handle.write(b"\n".join(json.dumps(row).encode() for row in conversation("latin", 10)) + b"\n{broken\n")
    run_pipeline(tmp_path / "run", [f"source.path={source}", "split=none"])
    manifest = assert_finished_cleanly(tmp_path / "run")
    assert manifest["counts"] == {"input_rows": 5, "exported_records": 4, "quarantined_rows": 1, "examples": 2, "input_lines": 5}
    (row,) = read_jsonl(tmp_path / "run" / "quarantine.jsonl")
    assert row["origin"] == {"path": "bad-%FF.jsonl", "line": 3} and row["record_id"] == "bad-%FF.jsonl:3"
    assert {entry["path"].rsplit("/", 1)[-1] for entry in manifest["inputs"]} == {"bad-%FF.jsonl", "good.jsonl"}


def test_a_quarantined_row_with_any_value_is_written(tmp_path):
    from distill.quarantine import QuarantineRow
    from distill.reasons import Reason

    row = QuarantineRow("parse", Reason.schema_violation, ("x",), "id", None, {"n": 2**70, "deep": nested(300)})
    written = write_output_jsonl(tmp_path / "q.jsonl", [row.to_json()])
    assert written["rows"] == 1
    (line,) = read_jsonl(tmp_path / "q.jsonl")
    assert line["record"]["n"] == str(2**70)


# --- 3 (#10): the field map cannot switch the firewall off ------------------------------------------------------


@pytest.mark.parametrize("mapping", ["+source.fields.category=verdict", "+source.fields.category=metadata.category"])
def test_a_field_map_edit_does_not_switch_the_firewall_off(tmp_path, mapping):
    rows = [
        *conversation("ok"),
        *conversation("rejected", 10, category="rejected", answer="REJECTED TEXT"),
        *conversation("partial", 20, category="partially_accepted", answer="PARTIAL TEXT"),
    ]
    logs = write_jsonl(tmp_path / "logs.jsonl", rows)
    run_pipeline(tmp_path / "run", [f"source.path={logs}", "split=none", mapping])
    assert_finished_cleanly(tmp_path / "run")
    exported = (tmp_path / "run" / "sft.jsonl").read_text()
    assert "REJECTED TEXT" not in exported and "PARTIAL TEXT" not in exported
    # The field map failed, so the row has no record id yet: its quarantine row holds the raw row.
    quarantined = {row["record"]["id"]: row for row in read_jsonl(tmp_path / "run" / "quarantine.jsonl")}
    for record_id in ("ok-u", "ok-a", "rejected-a", "partial-a"):
        assert quarantined[record_id]["reason"] == "schema_violation"
        assert quarantined[record_id]["errors"][0].startswith("category: the row has a 'category' key")


def test_allow_unmapped_is_the_named_opt_in(tmp_path):
    rows = [*conversation("ok"), *conversation("rejected", 10, category="rejected", answer="REJECTED TEXT")]
    logs = write_jsonl(tmp_path / "logs.jsonl", rows)
    overrides = [f"source.path={logs}", "split=none", "+source.fields.category=verdict", "source.allow_unmapped=[category]"]
    run_pipeline(tmp_path / "run", overrides)
    assert_finished_cleanly(tmp_path / "run")
    # Accepted without a category: the logs' own `category` key lands in metadata, the record has none.
    lines = read_jsonl(tmp_path / "run" / "sft.jsonl")
    assert {c for line in lines for c in line["provenance"]["categories"]} == {None}


# --- 5: input shapes people have --------------------------------------------------------------------------------


def test_a_byte_order_mark_is_not_part_of_the_first_row(tmp_path):
    logs = tmp_path / "bom.jsonl"
    logs.write_bytes(b"\xef\xbb\xbf" + b"\n".join(json.dumps(r).encode() for r in conversation("s")) + b"\n")
    run_pipeline(tmp_path / "run", [f"source.path={logs}", "split=none"])
    assert assert_finished_cleanly(tmp_path / "run")["counts"]["quarantined_rows"] == 0


def test_a_json_file_holding_one_array_is_streamed_as_its_rows(tmp_path, monkeypatch):
    from distill.sources import json_document

    monkeypatch.setattr(json_document, "CHUNK_BYTES", 7)  # elements, strings and escapes cut across reads
    rows = [*conversation("a"), *conversation("b", 10)]
    rows[1]["text"] = 'an answer with "quotes", [brackets] {braces} and a \\ backslash'
    logs = tmp_path / "logs.json"
    logs.write_text("\ufeff" + json.dumps([*rows, "not an object"], indent=2), encoding="utf-8")
    run_pipeline(tmp_path / "run", [f"source.path={logs}", "split=none"])
    manifest = assert_finished_cleanly(tmp_path / "run")
    assert manifest["counts"] == {"input_rows": 5, "exported_records": 4, "quarantined_rows": 1, "examples": 2, "input_lines": 5}
    (row,) = read_jsonl(tmp_path / "run" / "quarantine.jsonl")
    assert row["origin"] == {"path": "logs.json", "row": 4} and row["reason"] == "schema_violation"
    lines = read_jsonl(tmp_path / "run" / "sft.jsonl")
    assert any(m["content"] == rows[1]["text"] for line in lines for m in line["messages"])
    assert manifest["inputs"][0]["sha256"] == hashlib.sha256(logs.read_bytes()).hexdigest()


@pytest.mark.parametrize("after", [b" trailing text", b'\n[{"id": "x", "text": "a second array"}]'])
def test_what_follows_a_json_files_array_is_one_invalid_json_row(tmp_path, monkeypatch, after):
    from distill.sources import json_document

    monkeypatch.setattr(json_document, "CHUNK_BYTES", 7)  # the closing bracket and what follows cut across reads
    logs = tmp_path / "logs.json"
    logs.write_bytes(json.dumps(conversation("a")).encode() + after + b"\n")
    run_pipeline(tmp_path / "run", [f"source.path={logs}", "split=none"])
    manifest = assert_finished_cleanly(tmp_path / "run")
    assert manifest["counts"]["input_rows"] == 3 and manifest["counts"]["exported_records"] == 2
    (row,) = read_jsonl(tmp_path / "run" / "quarantine.jsonl")
    assert row["reason"] == "invalid_json" and row["origin"] == {"path": "logs.json", "row": 2}
    assert row["record"] == after.strip().decode()
    assert manifest["inputs"][0]["sha256"] == hashlib.sha256(logs.read_bytes()).hexdigest()


def test_a_json_file_holding_one_object_is_one_row_and_json_lines_named_json_stay_lines(tmp_path):
    source = tmp_path / "logs"
    source.mkdir()
    (source / "one.json").write_text(json.dumps(turn("solo", "solo", "user", "hi", 0), indent=2))
    write_jsonl(source / "lines.json", conversation("s", 10))
    run_pipeline(tmp_path / "run", [f"source.path={source}", "split=none"])
    assert assert_finished_cleanly(tmp_path / "run")["counts"]["input_rows"] == 3
    assert quarantine_by_id(tmp_path / "run")["solo"]["origin"] == {"path": "one.json", "row": 0}


@pytest.mark.parametrize("path", ["", " "])
def test_an_empty_source_path_is_a_config_error(path):
    config = compose_config([f"source.path='{path}'"])
    with pytest.raises(ConfigError, match="source.path: empty"):
        build_settings(config)


def test_a_coverage_record_with_an_unusable_group_key_is_quarantined_not_fatal(tmp_path):
    rows = [
        {"id": "c1", "task_id": "line\nbreak", "session_id": "e1", "text": "m1", "metadata": {"coverage": {"u:1": 1.0}}},
        {"id": "c2", "task_id": "fine", "session_id": "e2", "text": "m2", "metadata": {"coverage": {"u:1": 0.5}}},
    ]
    run_pipeline(tmp_path / "run", [f"source.path={write_jsonl(tmp_path / 'c.jsonl', rows)}", "task=coverage"])
    assert_finished_cleanly(tmp_path / "run")
    assert quarantine_by_id(tmp_path / "run")["c1"]["reason"] == "schema_violation"


# --- 6: dedup within one role -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["exact_dedup", "near_dedup"])
def test_dedup_compares_texts_within_one_role_unless_across_roles(kind):
    text = "please summarise the quarterly report for the board meeting tomorrow morning"
    records = [rec("u", 0, role="user", text=text), rec("a", 1, role="assistant", text=text)]
    kept, _, _ = apply(make_step(kind, scope="record"), records)
    assert kept == ["u", "a"]
    kept, dropped, _ = apply(make_step(kind, scope="record", across_roles=True), records)
    assert kept == ["u"] and dropped["a"].reason.value in ("duplicate", "near_duplicate")


# --- 2 / 6 / 8: the writer and the run directory ----------------------------------------------------------------


def test_a_write_stopped_midway_leaves_no_temporary_and_no_final_file(tmp_path):
    def rows() -> Iterator[dict]:
        yield {"a": 1}
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_output_jsonl(tmp_path / "out.jsonl", rows())
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize("block_bytes", [1, 7, 64, 1 << 20])
def test_lines_written_a_block_at_a_time_are_the_rows_in_order_with_their_hash(tmp_path, monkeypatch, block_bytes):
    from distill.output import files

    monkeypatch.setattr(files, "WRITE_BLOCK_BYTES", block_bytes)
    rows = [b'{"n":%d}\n' % i if i % 3 else {"n": i, "text": "x" * (i % 11)} for i in range(100)]
    written = write_output_jsonl(tmp_path / "out.jsonl", rows)
    data = (tmp_path / "out.jsonl").read_bytes()
    assert data == b"".join(row if isinstance(row, bytes) else files.jsonl_bytes(row) for row in rows)
    assert written == {"path": "out.jsonl", "sha256": hashlib.sha256(data).hexdigest(), "rows": 100}


def test_temporary_names_are_unique_per_process_and_write(tmp_path):
    from distill.output.files import temporary_path

    names = {temporary_path(tmp_path / "sft.jsonl").name for _ in range(50)}
    assert len(names) == 50
    assert all(name.startswith(f".sft.jsonl.{os.getpid()}.") and name.endswith(".tmp") for name in names)


def test_claiming_a_directory_removes_what_a_killed_run_left_and_refuses_earlier_outputs(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "coverage").mkdir(parents=True)
    (run_dir / ".sft.jsonl.123.abcd.tmp").write_text("half")
    (run_dir / "coverage" / ".x.jsonl.123.abcd.tmp").write_text("half")
    (run_dir / "sft.jsonl").write_text("old\n")
    with pytest.raises(OutputError, match="already holds an earlier run's outputs .*overwrite=true"):
        claim_run_directory(run_dir)
    assert not stray_temporaries(run_dir)
    claim_run_directory(run_dir, overwrite=True)
    assert sorted(p.name for p in run_dir.iterdir()) == []


def test_overwrite_never_removes_files_distill_did_not_write(tmp_path):
    (tmp_path / "README.md").write_text("mine")
    (tmp_path / "sft.jsonl").write_text("old\n")
    with pytest.raises(OutputError, match="files distill did not write \\(README.md\\)"):
        claim_run_directory(tmp_path, overwrite=True)
    assert (tmp_path / "README.md").exists() and (tmp_path / "sft.jsonl").exists()


def test_a_directory_in_use_is_refused_to_another_process(tmp_path):
    claim_run_directory(tmp_path / "run")
    other = subprocess.run(
        [sys.executable, "-c", "import sys; from pathlib import Path; from distill.output.files import "
         "claim_run_directory as c\ntry: c(Path(sys.argv[1]))\nexcept Exception as e: print(e)", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=60,
    )
    assert "is in use by another distill run" in other.stdout, other.stderr


def test_rerunning_into_a_finished_run_needs_overwrite_and_leaves_no_earlier_file(tmp_path):
    logs = write_jsonl(tmp_path / "logs.jsonl", [*conversation("a"), *conversation("b", 10)])
    run_pipeline(tmp_path / "run", [f"source.path={logs}"])
    assert (tmp_path / "run" / "sft.train.jsonl").exists()
    with pytest.raises(OutputError, match="earlier run's outputs"):
        run_pipeline(tmp_path / "run", [f"source.path={logs}", "split=none"])
    run_pipeline(tmp_path / "run", [f"source.path={logs}", "split=none", "overwrite=true"])
    manifest = assert_finished_cleanly(tmp_path / "run")
    on_disk = {p.name for p in (tmp_path / "run").iterdir() if not p.name.startswith(".")}
    assert on_disk == {entry["path"] for entry in manifest["outputs"]} | {"manifest.json"}


# --- the CLI: one line, never a traceback ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def logs(tmp_path_factory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("logs") / "logs.jsonl", [*conversation("a"), *conversation("b", 10)])


def test_hostile_logs_through_the_cli_end_in_quarantine_rows(tmp_path):
    source = tmp_path / "logs"
    source.mkdir()
    hostile = [
        *conversation("fine"),
        turn("huge", "h", "assistant", "x", 1, reward=1e20, tokens_used=18446744073709551615),
        turn("time", "t", "user", "x", 2) | {"created_at": "0001-01-01T00:00:00+01:00"},
        turn("deep", "d", "user", "x", 3, category="bogus", metadata=nested(300)),
    ]
    (source / "bom.jsonl").write_bytes(b"\xef\xbb\xbf" + b"\n".join(json.dumps(r).encode() for r in hostile) + b"\n")
    with open(os.path.join(os.fsencode(source), b"name-\xfe.jsonl"), "wb") as handle:
        handle.write(json.dumps(turn("named", "n", "user", "x", 4)).encode() + b"\n")
    (source / "array.json").write_text(json.dumps(conversation("arr", 20)))
    done = run_cli([f"source.path={source}", "split=none", "hydra.run.dir=run"], cwd=tmp_path)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    manifest = assert_finished_cleanly(tmp_path / "run")
    assert manifest["counts"]["input_rows"] == 8
    assert manifest["quarantine"]["schema_violation"] == 3


@pytest.mark.parametrize(
    "make, fragment",
    [
        (lambda d: (d / "taken").write_text("a file"), "exists and is not a directory"),
        (lambda d: None, "File name too long"),
    ],
    ids=["exists-as-a-file", "component-too-long"],
)
def test_a_bad_output_directory_is_one_line_before_hydra_sets_it_up(tmp_path, logs, make, fragment):
    make(tmp_path)
    target = "taken" if fragment.startswith("exists") else "x" * 300
    done = run_cli([f"source.path={logs}", f"hydra.run.dir={target}/run"], cwd=tmp_path)
    assert_one_line_error(done, "hydra.run.dir", fragment)


@pytest.mark.parametrize(("override", "fragments"), [
    ("foo=bar", ("Could not override 'foo'", "+foo=bar")),
    ("task=nonexistent", ("task/nonexistent", "Available options in 'task': coverage,", "sft_instruction")),
    ("+curation.steps.exact_dedup.scope=record", ("already at 'curation.steps.exact_dedup.scope'",)),
    ("~curation.steps.nope", ("'curation.steps.nope' does not exist",)),
    ("source.path=/tmp/a=b", ("cannot parse the override 'source.path=/tmp/a=b'",)),
])
def test_an_override_hydra_refuses_is_one_line_with_hydras_reason_and_creates_nothing(tmp_path, logs, override, fragments):
    done = run_cli([f"source.path={logs}", override, "hydra.run.dir=run"], cwd=tmp_path)
    assert done.returncode == 2
    assert_one_line_error(done, *fragments)
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (tmp_path / "run").exists()


def test_a_multirun_sweep_directory_blocked_by_a_file_is_one_line(tmp_path, logs):
    (tmp_path / "taken").write_text("a file")
    done = run_cli(["-m", f"source.path={logs}", "hydra.sweep.dir=taken/sweep", "split.seed=1,2"], cwd=tmp_path)
    assert_one_line_error(done, "hydra.sweep.dir: taken exists and is not a directory")


@pytest.fixture
def read_only_mount() -> Iterator[Path]:
    yield from mounted_tmpfs("size=1m,ro")


@pytest.mark.parametrize("inside", [False, True], ids=["the-mount", "below-it"])
def test_an_output_directory_on_a_read_only_mount_is_one_line(tmp_path, logs, read_only_mount, inside):
    target = read_only_mount / "run" if inside else read_only_mount
    done = run_cli([f"source.path={logs}", f"hydra.run.dir={target}"], cwd=tmp_path)
    assert_one_line_error(done, "hydra.run.dir", "ead-only file system")


def test_a_second_concurrent_run_into_one_directory_is_refused_and_the_first_is_intact(tmp_path):
    rows = [row for i in range(3000) for row in conversation(f"s{i}", i * 10)]
    source = write_jsonl(tmp_path / "many.jsonl", rows)
    command = [sys.executable, "-m", "distill", f"source.path={source}", "hydra.run.dir=shared"]
    first = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (tmp_path / "shared" / ".hydra").exists() and time.monotonic() < deadline:  # claimed, then set up
        time.sleep(0.01)
    second = run_cli([f"source.path={source}", "hydra.run.dir=shared"], cwd=tmp_path)
    out, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    assert_one_line_error(second, "hydra.run.dir")
    assert ("in use by another distill run" in second.stderr) or ("earlier run's outputs" in second.stderr)
    assert_finished_cleanly(tmp_path / "shared")


def test_two_runs_started_together_get_their_own_default_directories(tmp_path, logs):
    command = [sys.executable, "-m", "distill", f"source.path={logs}"]
    runs = [subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    for process in runs:
        process.communicate(timeout=120)
        assert process.returncode == 0
    directories = sorted((tmp_path / "outputs").glob("*/*"))
    assert len(directories) == 2
    for directory in directories:
        assert_finished_cleanly(directory)


@pytest.mark.parametrize("stop, code, said, whole_group", [
    (signal.SIGINT, 130, "interrupted", False), (signal.SIGTERM, 143, "terminated", False),
    (signal.SIGINT, 130, "interrupted", True),
], ids=["ctrl-c", "sigterm", "ctrl-c-in-a-terminal"])
def test_ctrl_c_during_a_run_exits_130_without_a_traceback_or_temporary_files(tmp_path, stop, code, said, whole_group):
    # Enough rows that the run goes on for seconds after its plan is logged (the signal comes up to 0.5 s after it):
    # the workers' fork server, started before the driver's imports, is ready by then, and 30,000 rows were all
    # written ~0.75 s after the plan.
    rows = [row for i in range(60000) for row in conversation(f"s{i}", i * 10)]
    source = write_jsonl(tmp_path / "many.jsonl", rows)
    # Several shards: the map runs on a pool of worker processes, which Ctrl-C must stop too.
    command = [sys.executable, "-m", "distill", f"source.path={source}", "hydra.run.dir=run",
               "executor.workers=2", "executor.shard_mb=0.5"]
    with ctrl_c_reaches_children():
        # `whole_group`: as a terminal sends Ctrl-C, to every process of the foreground job, the workers' fork server
        # included.
        process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   start_new_session=whole_group)
    seen = []
    for line in process.stderr:  # the plan is made: the map is under way
        seen.append(line)
        if "plan:" in line:
            break
    if whole_group:
        os.killpg(process.pid, stop)
    else:
        time.sleep(0.5)
        process.send_signal(stop)
    started = time.monotonic()
    out, err = process.communicate(timeout=60)
    err = "".join(seen) + err
    assert process.returncode == code, err
    assert time.monotonic() - started < 20
    assert "Traceback" not in err and f"distill: error: {said}" in err
    assert not stray_temporaries(tmp_path / "run") and not (tmp_path / "run" / "manifest.json").exists()


def mounted_tmpfs(options: str) -> Iterator[Path]:
    """A tmpfs mounted with `options` for the test's length (needs root: skipped, saying why, without)."""
    mount_point = Path(tempfile.mkdtemp(prefix="distill-tmpfs-"))
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount_point)], capture_output=True)
    if done.returncode != 0:
        mount_point.rmdir()
        pytest.skip(f"cannot mount a tmpfs ({options}) here (needs root): {done.stderr.decode(errors='replace').strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=False)
        mount_point.rmdir()


@pytest.fixture
def tiny_disk() -> Iterator[Path]:
    yield from mounted_tmpfs("size=2m")


def test_a_full_disk_is_one_line_and_leaves_no_temporary_file(tmp_path, tiny_disk):
    rows = [row for i in range(1500) for row in conversation(f"s{i}", i * 10)]
    for row in rows:
        row["text"] += " " + "filler " * 300
    source = write_jsonl(tmp_path / "big.jsonl", rows)
    done = run_cli([f"source.path={source}", f"hydra.run.dir={tiny_disk / 'run'}"], cwd=tmp_path)
    assert_one_line_error(done, "No space left on device")
    assert not stray_temporaries(tiny_disk)


# --- 11: configs stay data ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "experiment, fragment",
    [
        ("hydra:\n  callbacks:\n    x:\n      _target_: pathlib.Path.touch\n      self: {marker}\n",
         "hydra.callbacks.x._target_"),
        ("hydra:\n  job_logging:\n    handlers:\n      x:\n        (): pathlib.Path.touch\n        self: {marker}\n",
         "hydra.job_logging.handlers.x.()"),
        ("hydra:\n  job_logging:\n    handlers:\n      x:\n        class: pathlib.Path\n", "hydra.job_logging.handlers.x.class"),
        ("hydra:\n  job:\n    env_set:\n      LD_PRELOAD: {marker}.so\n", "hydra.job.env_set.LD_PRELOAD"),
    ],
    ids=["callback", "logging-factory", "logging-class", "environment"],
)
def test_a_config_that_names_code_under_hydra_is_refused_and_creates_nothing(tmp_path, logs, experiment, fragment):
    marker = tmp_path / "created-by-config"
    (tmp_path / "conf" / "experiment").mkdir(parents=True)
    (tmp_path / "conf" / "experiment" / "evil.yaml").write_text(
        "# @package _global_\n" + experiment.format(marker=marker)
    )
    args = [f"hydra.searchpath=[file://{tmp_path / 'conf'}]", "+experiment=evil", f"source.path={logs}",
            "hydra.run.dir=run"]
    done = run_cli(args, cwd=tmp_path)
    assert_one_line_error(done, fragment)
    assert not marker.exists() and not (tmp_path / "run").exists()


# --- the permission cases, as a normal user (root reads everything) ---------------------------------------------


@pytest.fixture
def as_nobody() -> Iterator[Path]:
    """A world-writable scratch directory, and a check that user 65534 can run distill from this checkout."""
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv is not installed")
    probe = subprocess.run([*NOBODY, sys.executable, "-c", "import distill.cli"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"user 65534 cannot run distill from here (needs root and a world-readable venv/repo): "
                    f"{(probe.stderr.strip().splitlines() or ['?'])[-1]}")
    scratch = Path(tempfile.mkdtemp(prefix="distill-nobody-"))
    scratch.chmod(0o777)
    try:
        yield scratch
    finally:
        for path in scratch.rglob("*"):
            path.chmod(0o777) if path.is_dir() else None
        shutil.rmtree(scratch)


def run_as_nobody(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    return subprocess.run([*NOBODY, sys.executable, "-m", "distill", *args], cwd=cwd, capture_output=True, text=True,
                          env=env, timeout=120)


def test_unreadable_input_files_and_directories_are_named_up_front(as_nobody):
    source = as_nobody / "logs"
    (source / "locked").mkdir(parents=True)
    write_jsonl(source / "ok.jsonl", conversation("a"))
    write_jsonl(source / "secret.jsonl", conversation("b"))
    write_jsonl(source / "locked" / "inner.jsonl", conversation("c"))
    (source / "secret.jsonl").chmod(0o000)
    (source / "locked").chmod(0o000)
    done = run_as_nobody([f"source.path={source}", "hydra.run.dir=run"], cwd=as_nobody)
    error = assert_one_line_error(done, "source.path: cannot read", "Permission denied")
    assert "logs/locked/" in error and "logs/secret.jsonl" in error


@pytest.mark.parametrize("form", ["directory", "glob"])
def test_a_broken_link_or_a_fifo_among_the_inputs_is_named_up_front_not_skipped(tmp_path, form):
    # Skipped, their rows would be lost without a word while the run exits 0.
    source = tmp_path / "logs"
    write_jsonl(source / "ok.jsonl", conversation("a"))
    (source / "moved.jsonl").symlink_to(tmp_path / "gone.jsonl")
    os.mkfifo(source / "pipe.jsonl")
    (source / "nested.jsonl").mkdir()  # a directory named like a file is passed over, as before
    path = source if form == "directory" else source / "*.jsonl"
    done = run_cli([f"source.path={path}", "hydra.run.dir=run"], cwd=tmp_path)
    error = assert_one_line_error(done, "source.path: cannot read")
    assert "logs/moved.jsonl (a symbolic link to nothing)" in error and "logs/pipe.jsonl (not a regular file)" in error
    assert "nested" not in error and not (tmp_path / "run" / "manifest.json").exists()


@pytest.mark.parametrize("target", ["readonly", "readonly/run"])
def test_an_output_directory_that_is_not_writable_is_one_line(as_nobody, target):
    write_jsonl(as_nobody / "logs.jsonl", conversation("a"))
    (as_nobody / "readonly").mkdir()
    (as_nobody / "readonly").chmod(0o555)
    done = run_as_nobody([f"source.path={as_nobody / 'logs.jsonl'}", f"hydra.run.dir={target}"], cwd=as_nobody)
    assert_one_line_error(done, "hydra.run.dir", "Permission denied")


def test_a_quarantined_record_is_measured_only_when_it_may_be_long_or_not_encodable():
    # `_truncated` skips encoding a flat record its bound says is short: the bound must never be wrong.
    import orjson

    from distill.quarantine import MAX_QUARANTINED_RECORD_BYTES, _surely_short

    rng = random.Random(3)

    def value():
        return rng.choice([
            rng.random(), rng.randrange(-(2**63), 2**64), True, None, "x" * rng.randrange(20000),
            '\x01"\\' * rng.randrange(5000), {"path": "a", "line": 3}, 2**70, "é", [1], float("nan"),
        ])

    short = 0
    for _ in range(5000):
        record = {f"k{i}": value() for i in range(rng.randrange(8))}
        if _surely_short(record):
            short += 1
            assert len(orjson.dumps(record, option=orjson.OPT_SORT_KEYS)) <= MAX_QUARANTINED_RECORD_BYTES
    assert short > 1000
    assert _surely_short({"id": "a", "text": "hello " * 1000, "origin": {"path": "a.jsonl", "line": 2}})


@pytest.mark.parametrize("block_bytes", [1, 100, 1 << 20])
def test_a_file_written_in_many_blocks_has_the_sha256_of_its_bytes(tmp_path, monkeypatch, block_bytes):
    """Blocks after the first are hashed on a thread beside the writing: in order, every one of them."""
    from distill.output import files

    monkeypatch.setattr(files, "WRITE_BLOCK_BYTES", block_bytes)
    rows = [{"n": n, "text": "x" * (n % 37)} for n in range(500)]
    entry = write_output_jsonl(tmp_path / "out.jsonl", rows)
    data = (tmp_path / "out.jsonl").read_bytes()
    assert entry == {"path": "out.jsonl", "sha256": hashlib.sha256(data).hexdigest(), "rows": 500}
    assert data.count(b"\n") == 500


@pytest.mark.parametrize(
    "stop, code, said", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")], ids=["ctrl-c", "sigterm"]
)
def test_a_stop_while_distill_is_still_being_imported_is_one_line(tmp_path, stop, code, said):
    """The signal comes as `distill.cli` starts to load (sent by the process to itself then, so the moment is
    certain): one line, exit 130 or 143, no traceback."""
    starter = (
        "import builtins, os, runpy, sys\n"
        "real = builtins.__import__\n"
        "def hooked(name, *args, **kwargs):\n"
        "    if name == 'distill.cli':\n"
        f"        os.kill(os.getpid(), {int(stop)})\n"
        "    return real(name, *args, **kwargs)\n"
        "builtins.__import__ = hooked\n"
        "sys.argv = ['distill', 'hydra.run.dir=run']\n"
        "runpy.run_module('distill', run_name='__main__', alter_sys=True)\n"
    )
    with ctrl_c_reaches_children():
        done = subprocess.run([sys.executable, "-c", starter], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == code, done.stderr
    assert done.stderr.strip() == f"distill: error: {said}"
    assert not (tmp_path / "run").exists()
