"""The dataset card: README.md in the run directory, Hugging Face front matter pointing at the run's files, a body
rendered from the manifest's data only, no wall-clock time, listed in the manifest's outputs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import yaml
from helpers import run_cli, run_pipeline

from distill.output.render import fmt_number, funnel_rows, reproduce_command


def card_parts(run_dir: Path) -> tuple[dict, str]:
    text = (run_dir / "README.md").read_text("utf-8")
    assert text.startswith("---\n")
    matter, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(matter), body


def test_the_card_front_matter_loads_and_points_at_the_files_written(tmp_path):
    run_dir = tmp_path / "run"
    done = run_cli([f"hydra.run.dir={run_dir}", "card.license=mit", "card.language=[en,de]"], tmp_path)
    assert done.returncode == 0, done.stderr
    matter, body = card_parts(run_dir)

    assert (matter["license"], matter["language"]) == ("mit", ["en", "de"])
    assert matter["task_categories"] == ["text-generation"]
    assert matter["size_categories"] == ["n<1K"]
    [config] = matter["configs"]
    assert config["data_files"] == [
        {"split": "train", "path": "sft.train.jsonl"}, {"split": "eval", "path": "sft.eval.jsonl"},
    ]
    assert all((run_dir / entry["path"]).is_file() for entry in config["data_files"])

    manifest = json.loads((run_dir / "manifest.json").read_text())
    [entry] = [e for e in manifest["outputs"] if e["path"] == "README.md"]
    assert entry["sha256"] == hashlib.sha256((run_dir / "README.md").read_bytes()).hexdigest()
    assert manifest["created_at"] not in body  # no wall-clock time
    for input_entry in manifest["inputs"]:
        assert input_entry["sha256"] in body
    assert "unsafe_sft_category" in body and "duplicate" in body
    assert "```bash\ndistill card.license=mit 'card.language=[en,de]'\n```" in body
    assert "README.md" in done.stdout


def test_two_runs_write_the_same_card(tmp_path):
    for name in ("one", "two"):
        done = run_cli([f"hydra.run.dir={tmp_path / name}", "split.seed=3"], tmp_path)
        assert done.returncode == 0, done.stderr
    assert (tmp_path / "one" / "README.md").read_bytes() == (tmp_path / "two" / "README.md").read_bytes()


def test_an_unsplit_run_is_one_train_split_and_a_dry_run_writes_no_card(tmp_path):
    result = run_pipeline(tmp_path / "none", ["split=none", "task=preference"])
    matter, _ = card_parts(tmp_path / "none")
    assert matter["configs"][0]["data_files"] == [{"split": "train", "path": "preference.jsonl"}]
    assert "README.md" in result.files
    run_pipeline(tmp_path / "dry", ["dry_run=true"])
    assert not (tmp_path / "dry" / "README.md").exists()


def test_render_helpers():
    manifest = {
        "command": "distill hydra.run.dir=/tmp/x task=sft 'split.seed=3'",
        "counts": {"input_rows": 10},
        "stages": [
            {"step": "parse", "kind": "jsonl", "kept": 9, "dropped": {"invalid_json": 1}},
            {"step": "task", "kind": "task:sft", "kept": 5, "dropped": {"after_gap": 1, "not_selected": 3}},
        ],
    }
    assert reproduce_command(manifest) == "distill task=sft split.seed=3"
    assert reproduce_command({"command": "", "choices": {"task": "rag", "source": "jsonl"}}) == "distill source=jsonl task=rag"
    # The report pins the command to the run's source commit; the card lists the commit under Versions.
    pinned = reproduce_command({**manifest, "git_commit": "abc123"}, pin_commit=True)
    assert pinned == "git checkout abc123 && distill task=sft split.seed=3"
    assert reproduce_command({**manifest, "git_commit": None}, pin_commit=True) == "distill task=sft split.seed=3"
    assert [(r.entered, r.kept, r.dropped_total, r.dropped) for r in funnel_rows(manifest)] == [
        (10, 9, 1, [("invalid_json", 1)]), (9, 5, 4, [("not_selected", 3), ("after_gap", 1)]),
    ]
    assert (fmt_number(1234567), fmt_number(0.25), fmt_number(None)) == ("1,234,567", "0.25", "–")
