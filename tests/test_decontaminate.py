"""decontaminate: held-out eval items leaked into training records are caught (n-gram and embedding modes)."""

from __future__ import annotations

import json

import jsonschema
import pytest
from helpers import read_jsonl, run_cli, run_pipeline, write_jsonl
from pydantic import ValidationError
from step_helpers import apply, edited, make_step, prose, rec

from distill.validation import load_schema

ITEM = (
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips to her friends in May. "
    "How many clips did Natalia sell altogether in April and May?"
)
OTHER = "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. How much did she earn?"


@pytest.fixture
def evals(tmp_path):
    write_jsonl(tmp_path / "evals" / "gsm8k.jsonl", [{"id": "gsm-1", "question": ITEM}, {"id": "gsm-2", "question": OTHER}])
    (tmp_path / "evals" / "trivia.txt").write_text("Which planet in our solar system has the most moons orbiting it today?\n\n")
    return tmp_path / "evals"


def leaks():
    words = ITEM.split()
    return {
        "verbatim": f"Here is a question: {ITEM} The answer is 72.",
        "truncated": " ".join(words[: int(len(words) * 0.6)]),
        "edited": " ".join(edited(words, 10, seed=3)),
        "reformatted": ITEM.upper().replace(",", " ;").replace("?", " ???"),
    }


def controls():
    return {
        "topic": "Natalia likes clips. In April and May she met friends and sold things at the market.",
        "partial": " ".join(ITEM.split()[:10]),  # 10 of 34 tokens: under half
        "filler": " ".join(prose(7, 150)),
    }


def test_default_overlap_rule_catches_verbatim_truncated_and_edited_copies_not_controls(evals):
    records = [rec(f"leak-{k}", i, text=t) for i, (k, t) in enumerate(leaks().items())]
    records += [rec(f"clean-{k}", 10 + i, text=t) for i, (k, t) in enumerate(controls().items())]
    kept, dropped, stage = apply(make_step("decontaminate", eval_sets=[str(evals / "*")]), records)
    assert sorted(kept) == ["clean-filler", "clean-partial", "clean-topic"]
    row = dropped["leak-verbatim"]
    assert row.reason.value == "contaminated"
    assert row.detail["eval_set"] == "gsm8k" and row.detail["eval_item"] == "gsm-1"
    assert len(row.detail["matched_ngram"].split()) == 8 and row.detail["matched_ngram"] in ITEM.lower().replace(",", "")
    assert dropped["leak-truncated"].detail["overlap"] == pytest.approx(0.59, abs=0.02)
    assert stage["hits"] == {"gsm8k": 4, "trivia": 0}
    assert stage["eval_items"] == {"gsm8k": 2, "trivia": 1}
    assert (stage["ngram_size"], stage["min_overlap_ratio"]) == (8, 0.5)


def test_any13_preset_flags_any_shared_13_gram_only(evals):
    words = ITEM.split()
    records = [
        rec("thirteen", 1, text="prefix " + " ".join(words[5:18]) + " suffix"),
        rec("twelve", 2, text="prefix " + " ".join(words[5:17]) + " suffix"),
        rec("edited", 3, text=" ".join(edited(words, 10, seed=3))),
    ]
    kept, dropped, stage = apply(make_step("decontaminate", eval_sets=[str(evals / "gsm8k.jsonl")], preset="any13"), records)
    assert kept == ["twelve", "edited"]
    assert len(dropped["thirteen"].detail["matched_ngram"].split()) == 13
    assert stage["ngram_size"] == 13


def test_plain_text_eval_sets_name_items_by_file_and_line(evals):
    text = "quiz: which planet in our solar system has the most moons orbiting it today? saturn"
    _, dropped, _ = apply(make_step("decontaminate", eval_sets=[str(evals / "trivia.txt")]), [rec("r", 1, text=text)])
    assert dropped["r"].detail["eval_item"] == "trivia.txt:1" and dropped["r"].detail["eval_set"] == "trivia"


def test_items_shorter_than_n_are_counted_and_empty_records_kept(tmp_path):
    (tmp_path / "short.txt").write_text("two words\n")
    kept, _, stage = apply(
        make_step("decontaminate", eval_sets=[str(tmp_path / "short.txt")]),
        [rec("a", 1, text="two words"), rec("b", 2, text=""), rec("c", 3)],
    )
    assert kept == ["a", "b", "c"] and stage["short_items"] == 1


def test_embedding_mode_uses_cosine_distance_and_keeps_records_without_embeddings(tmp_path):
    write_jsonl(tmp_path / "vec.jsonl", [{"id": "e1", "text": "x", "embedding": [1.0, 0.0, 0.0]}])
    records = [
        rec("near", 1, text="a", embedding=[0.99, 0.05, 0.0]),
        rec("far", 2, text="b", embedding=[0.0, 1.0, 0.0]),
        rec("none", 3, text="c"),
    ]
    kept, dropped, stage = apply(
        make_step("decontaminate", eval_sets=[str(tmp_path / "vec.jsonl")], mode="embedding", threshold=0.01), records
    )
    assert kept == ["far", "none"]
    assert dropped["near"].detail["eval_item"] == "e1" and dropped["near"].detail["distance"] < 0.01
    assert stage["records_without_embedding"] == 1 and stage["hits"] == {"vec": 1}


def test_missing_eval_set_is_a_config_error(tmp_path):
    with pytest.raises(ValidationError, match="no file matches"):
        make_step("decontaminate", eval_sets=[str(tmp_path / "nope.jsonl")])


def test_pipeline_and_cli_report_hits_per_eval_set(tmp_path, evals):
    logs = write_jsonl(tmp_path / "logs.jsonl", [
        {"id": "u1", "session_id": "s1", "role": "user", "text": ITEM, "created_at": 1},
        {"id": "a1", "session_id": "s1", "role": "assistant", "text": "72", "created_at": 2},
        {"id": "u2", "session_id": "s2", "role": "user", "text": "hello there", "created_at": 3},
        {"id": "a2", "session_id": "s2", "role": "assistant", "text": "hi", "created_at": 4},
    ])
    overrides = [f"source.path={logs}", "split=none", f"++curation.steps.decontaminate.eval_sets=[{evals}/gsm8k.jsonl]"]
    result = run_pipeline(tmp_path / "run", overrides)
    rows = read_jsonl(tmp_path / "run" / "quarantine.jsonl")
    contaminated = [row for row in rows if row["reason"] == "contaminated"]
    assert [row["record_id"] for row in contaminated] == ["u1"]
    for row in rows:
        jsonschema.validate(row, load_schema("quarantine_row"))
    stage = next(s for s in result.manifest["stages"] if s["step"] == "decontaminate")
    assert stage["hits"] == {"gsm8k": 1}

    done = run_cli([*overrides, f"hydra.run.dir={tmp_path / 'cli'}"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    manifest = json.loads((tmp_path / "cli" / "manifest.json").read_text())
    assert next(s for s in manifest["stages"] if s["step"] == "decontaminate")["hits"] == {"gsm8k": 1}

    bad = run_cli([f"source.path={logs}", f"++curation.steps.decontaminate.eval_sets=[{tmp_path}/missing.jsonl]"], cwd=tmp_path)
    assert bad.returncode == 2
    assert bad.stderr.startswith("distill: error: curation.steps.decontaminate.eval_sets")
    assert "Traceback" not in bad.stderr
