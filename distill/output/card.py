"""The dataset card: `README.md` in the run directory, with Hugging Face dataset-card metadata (YAML front matter)
and a body that says where the data came from and what was done to it. Rendered from the run's digest only, so it
holds no wall-clock time and two runs of the same inputs and config write the same card."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

from distill.output.documents import DOCUMENTS, RunDigest
from distill.output.files import write_text
from distill.output.render import funnel_rows, render, reproduce_command

CARD_FILE = "README.md"
# Hugging Face task categories by distill task kind.
TASK_CATEGORIES = {
    "sft": ["text-generation"],
    "sft_instruction": ["text-generation"],
    "preference": ["text-generation"],
    "preference_category": ["text-generation"],
    "rollout": ["reinforcement-learning", "text-generation"],
    "rag": ["text-retrieval", "question-answering"],
    "coverage": ["other"],
}
# Hugging Face size categories: (upper bound, label).
SIZE_CATEGORIES = [
    (1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
    (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B"),
]
DEDUP_KINDS = ("exact_dedup", "near_dedup", "semantic_dedup", "decontaminate")
# A stage's keys that are no figure of its own (the samples the report shows are left to the report).
STAGE_KEYS = {"step", "kind", "kept", "dropped", "largest_clusters", "first_hits"}
# Task settings that open or close its firewall.
FIREWALL_SETTINGS = ("include_partial", "include_review", "require_category")


class CardConfig(BaseModel):
    """`card.*`: the dataset card's metadata that the data cannot tell."""

    model_config = ConfigDict(extra="forbid")

    license: str = Field(default="other", min_length=1)
    language: list[str] = ["en"]
    pretty_name: str | None = None


def size_category(examples: int) -> str:
    return next((label for bound, label in SIZE_CATEGORIES if examples < bound), "n>1B")


def data_files(digest: RunDigest) -> list[dict[str, str]]:
    """One `{split, path}` per dataset file the run wrote: `<task>.<side>.<format>` is split `<side>`, a file
    without a side (split=none) is `train`."""
    written = {entry["path"] for entry in digest.manifest["outputs"]}
    files = []
    for name in (digest.stats or {}).get("files", {}):
        if name in written:
            parts = name.split(".")
            files.append({"split": parts[1] if len(parts) == 3 else "train", "path": name})
    return files


def front_matter(digest: RunDigest, card: CardConfig) -> dict[str, Any]:
    manifest = digest.manifest
    kind = manifest["config"]["task"]["kind"]
    matter: dict[str, Any] = {}
    if card.pretty_name is not None:
        matter["pretty_name"] = card.pretty_name
    matter["license"] = card.license
    matter["language"] = list(card.language)
    matter["task_categories"] = TASK_CATEGORIES.get(kind, ["other"])
    matter["size_categories"] = [size_category(manifest["counts"]["examples"])]
    matter["tags"] = ["distill", kind]
    files = data_files(digest)
    if files:
        matter["configs"] = [{"config_name": "default", "data_files": files}]
    return matter


def body_context(digest: RunDigest) -> dict[str, Any]:
    """What the card's template shows, all of it from the manifest and stats."""
    manifest = digest.manifest
    config = manifest["config"]
    steps = config["curation"]["steps"]
    stages = manifest["stages"]
    return {
        "manifest": manifest,
        "task": config["task"],
        "source_kind": config["source"].get("kind"),
        "chain": [
            {"name": name, "params": {k: v for k, v in (steps.get(name) or {}).items()}}
            for name in manifest["choices"].get("curation.order", [])
        ],
        "funnel": funnel_rows(manifest),
        "firewall": [stage for stage in stages if stage["step"] == "firewall"],
        "firewall_settings": {key: config["task"][key] for key in FIREWALL_SETTINGS if key in config["task"]},
        "categories": {name: section.get("by_category", {}) for name, section in (digest.stats or {}).get("files", {}).items()},
        "dedup": [
            {**stage, "extra": {k: v for k, v in stage.items() if k not in STAGE_KEYS}}
            for stage in stages if stage["kind"] in DEDUP_KINDS
        ],
        "command": reproduce_command(manifest),
        "notes": manifest.get("notes", []),
    }


def render_card(digest: RunDigest) -> str:
    card = CardConfig.model_validate(digest.manifest["config"].get("card") or {})
    matter = yaml.safe_dump(front_matter(digest, card), sort_keys=False, allow_unicode=True, default_flow_style=False)
    return f"---\n{matter}---\n\n" + render("card.md.j2", **body_context(digest))


def dataset_card(digest: RunDigest, output_dir: Path) -> dict[str, Any]:
    """Writes `README.md` (the dataset card); returns its manifest output entry."""
    return write_text(output_dir / CARD_FILE, render_card(digest))


DOCUMENTS.append(dataset_card)
