"""Deterministic synthetic logged sessions for the benchmark, with planted duplicates, leaks and secrets.

    python bench/generate.py --records 100000 --out bench/data/100000

Writes `logs.jsonl` (user/assistant records in sessions, 0.2-8 KB lines), `evals/heldout.jsonl` (the held-out set)
and `truth.json` (what was planted, for precision/recall):

* exact copies: 2% of sessions repeat an earlier original session verbatim (new ids, later timestamps);
* near copies: 4% of sessions repeat an earlier original with each text edited at a known word-substitution rate
  (0.5, 1, 2, 3, 5 or 10%); the truth records each copied record's exact word-5-gram Jaccard similarity to its source;
* leaks: 1% of records in sessions that are never copied carry an eval item, verbatim, truncated to 60-90% of its
  words, or with 1 word in 10 substituted;
* secrets: 0.5% of records in sessions that are never copied carry an email address, a phone number or an AWS key.

Text is Zipf-distributed pseudo-words (so common words and phrases recur, as in real text). Same arguments, same
bytes: numpy's PCG64 with a fixed seed drives every choice.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import orjson

from distill.curation.textnorm import words as normalized_words

SYLLABLES = [a + b for a in "bcdfghjklmnprstvwz" for b in ("a", "e", "i", "o", "u", "ai", "ou")]
VOCABULARY_SIZE = 30_000
EDIT_RATES = (0.005, 0.01, 0.02, 0.03, 0.05, 0.10)
SHINGLE = 5
EMBEDDING_DIMS = 32


def vocabulary(rng: np.random.Generator) -> np.ndarray:
    words: dict[str, None] = {}
    while len(words) < VOCABULARY_SIZE:
        length = int(rng.integers(1, 5))
        words["".join(SYLLABLES[i] for i in rng.integers(0, len(SYLLABLES), length))] = None
    return np.array(list(words), dtype=object)


class Words:
    """Draws Zipf(1.0)-distributed words from the vocabulary."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.vocabulary = vocabulary(rng)
        weights = 1.0 / np.arange(1, VOCABULARY_SIZE + 1)
        self.cdf = np.cumsum(weights) / weights.sum()

    def draw(self, count: int) -> list[str]:
        return self.vocabulary[np.searchsorted(self.cdf, self.rng.random(count))].tolist()

    def text(self, count: int) -> str:
        words = self.draw(count)
        # Sentences: a capital and a full stop every ~12 words, so normalisation has something to do.
        for start in range(0, len(words), 12):
            words[start] = words[start].capitalize()
            end = min(start + 11, len(words) - 1)
            words[end] = words[end] + "."
        return " ".join(words)

    def edit(self, text: str, rate: float) -> str:
        words = text.split(" ")
        positions = np.flatnonzero(self.rng.random(len(words)) < rate)
        for position, word in zip(positions.tolist(), self.draw(len(positions))):
            words[position] = word
        return " ".join(words)


def shingles(text: str) -> set[tuple[str, ...]]:
    tokens = normalized_words(text)
    if len(tokens) < SHINGLE:
        return {tuple(tokens)}
    return {tuple(tokens[i : i + SHINGLE]) for i in range(len(tokens) - SHINGLE + 1)}


def jaccard(a: str, b: str) -> float:
    x, y = shingles(a), shingles(b)
    return len(x & y) / len(x | y) if x | y else 1.0


def text_lengths(rng: np.random.Generator, count: int, median_words: float) -> np.ndarray:
    return np.clip(rng.lognormal(np.log(median_words), 0.7, count), 30, 1200).astype(int)


def plan_sessions(rng: np.random.Generator, records: int) -> list[tuple[str, int, float]]:
    """One entry per session, in time order: (kind, source session or -1, edit rate)."""
    plan: list[tuple[str, int, float]] = []
    originals: list[int] = []
    total = 0
    while total < records:
        draw = rng.random()
        if originals and draw < 0.02:
            plan.append(("exact", originals[int(rng.integers(len(originals)))], 0.0))
        elif originals and draw < 0.06:
            rate = EDIT_RATES[int(rng.integers(len(EDIT_RATES)))]
            plan.append(("near", originals[int(rng.integers(len(originals)))], rate))
        else:
            originals.append(len(plan))
            plan.append(("original", -1, 0.0))
        total += 2  # a session has at least 2 records; the generator stops at exactly `records`
    return plan


def eval_items(words: Words, count: int) -> list[str]:
    return [words.text(int(n)) for n in words.rng.integers(25, 61, count)]


def leak(words: Words, item: str, how: str) -> str:
    tokens = item.split(" ")
    if how == "truncated":
        return " ".join(tokens[: max(1, int(len(tokens) * words.rng.uniform(0.6, 0.9)))])
    if how == "edited":
        start = int(words.rng.integers(10))
        for position in range(start, len(tokens), 10):
            tokens[position] = words.draw(1)[0]
        return " ".join(tokens)
    return item


def secret(rng: np.random.Generator) -> tuple[str, str]:
    kind = ("email", "phone", "aws_access_key")[int(rng.integers(3))]
    n = int(rng.integers(10**6))
    if kind == "email":
        return kind, f"user{n}@example.com"
    if kind == "phone":
        return kind, f"+1 (415) 555-{n % 10000:04d}"
    return kind, "AKIA" + "".join("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"[int(i)] for i in rng.integers(0, 32, 16))


def generate(records: int, out: Path, seed: int = 0, embedding_dims: int = EMBEDDING_DIMS) -> dict:
    rng = np.random.default_rng(seed)
    words = Words(rng)
    items = eval_items(words, 1000)
    plan = plan_sessions(rng, records)
    sources = {source for _, source, _ in plan if source >= 0}
    kept_texts: dict[int, list[tuple[str, str, list[float] | None]]] = {}
    truth: dict = {"exact_copies": [], "near_copies": [], "leaks": [], "secrets": []}
    out.mkdir(parents=True, exist_ok=True)
    (out / "evals").mkdir(exist_ok=True)
    with (out / "evals" / "heldout.jsonl").open("wb") as handle:
        for number, item in enumerate(items):
            handle.write(orjson.dumps({"id": f"heldout-{number}", "question": item}) + b"\n")

    written = 0
    bytes_written = 0
    with (out / "logs.jsonl").open("wb") as handle:
        for session, (kind, source, rate) in enumerate(plan):
            if written >= records:
                break
            if kind == "original":
                turns = []
                pairs = int(rng.integers(1, 4))
                user_lengths = text_lengths(rng, pairs, 60)
                assistant_lengths = text_lengths(rng, pairs, 260)
                for pair in range(pairs):
                    turns.append(("user", words.text(int(user_lengths[pair])), None))
                    vector = np.round(rng.normal(size=embedding_dims), 4).tolist()
                    turns.append(("assistant", words.text(int(assistant_lengths[pair])), vector))
                if session in sources:
                    kept_texts[session] = turns
            else:
                original = kept_texts[source]
                turns = []
                for role, text, vector in original:
                    if kind == "near":
                        text = words.edit(text, rate)
                        vector = None if vector is None else np.round(np.array(vector) + rng.normal(0, 0.01, embedding_dims), 4).tolist()
                    turns.append((role, text, vector))
            session_id = f"s{session:07d}"
            for turn, (role, text, vector) in enumerate(turns):
                if written >= records:
                    break
                record_id = f"r{written:08d}"
                if kind == "exact":
                    truth["exact_copies"].append({"id": record_id, "session": session_id, "source_session": f"s{source:07d}"})
                elif kind == "near":
                    source_text = kept_texts[source][turn][1]
                    truth["near_copies"].append({
                        "id": record_id, "session": session_id, "source_session": f"s{source:07d}",
                        "edit_rate": rate, "jaccard": round(jaccard(source_text, text), 4),
                    })
                elif session not in sources and rng.random() < 0.01:
                    how = ("verbatim", "truncated", "edited")[int(rng.integers(3))]
                    item = int(rng.integers(len(items)))
                    tokens = text.split(" ")
                    at = int(rng.integers(len(tokens) + 1))
                    text = " ".join([*tokens[:at], leak(words, items[item], how), *tokens[at:]])
                    truth["leaks"].append({"id": record_id, "eval_item": f"heldout-{item}", "how": how})
                if kind == "original" and session not in sources and rng.random() < 0.005:
                    secret_kind, value = secret(rng)
                    text = f"{text} Contact: {value}"
                    truth["secrets"].append({"id": record_id, "kind": secret_kind})
                row = {
                    "id": record_id, "session_id": session_id, "role": role, "text": text,
                    "created_at": _timestamp(session, turn),
                    "category": "accepted" if role == "user" else _category(rng),
                }
                if role == "assistant":
                    row["reward"] = round(float(rng.random()), 3)
                    row["embedding"] = vector
                line = orjson.dumps(row) + b"\n"
                handle.write(line)
                bytes_written += len(line)
                written += 1
    meta = {"records": written, "sessions": session + 1, "bytes": bytes_written, "seed": seed,
            "planted": {key: len(value) for key, value in truth.items()}}
    (out / "truth.json").write_text(json.dumps({"meta": meta, **truth}))
    return meta


def _timestamp(session: int, turn: int) -> str:
    seconds = session * 40 + turn
    days, seconds = divmod(seconds, 86400)
    return f"2026-{1 + days // 28:02d}-{1 + days % 28:02d}T{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}Z"


def _category(rng: np.random.Generator) -> str:
    draw = rng.random()
    return "accepted" if draw < 0.85 else "partially_accepted" if draw < 0.9 else "rejected" if draw < 0.95 else "needs_human_review"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--embedding-dims", type=int, default=EMBEDDING_DIMS,
                        help="width of the assistant records' embeddings (real encoders: 384-3072)")
    args = parser.parse_args()
    print(json.dumps(generate(args.records, args.out, args.seed, args.embedding_dims)))


if __name__ == "__main__":
    main()
