"""`stats.json`: one section per dataset file with counts, lengths, rewards, form and exclusions."""

from __future__ import annotations

import json

from helpers import read_jsonl, run_cli, run_pipeline, write_jsonl
from task_fixtures import assert_schema_valid, run_task, turn


def _stats_schema_valid(stats):
    assert_schema_valid([stats], "stats")


def test_sft_counts_tokens_used_rewards_and_exclusions(tmp_path):
    rows = [
        turn("u1", "user", "q1", 0, session_id="s1", tenant="t1", tokens_used=10),
        turn("a1", "assistant", "a1", 1, session_id="s1", tenant="t1", tokens_used=30, reward=0.9, reward_source="vrf"),
        turn("u2", "user", "q2", 0, session_id="s2", tokens_used=5, category="accepted"),
        turn("a2", "assistant", "a2", 1, session_id="s2", tokens_used=5, reward=0.4, reward_source="judge"),
        turn("u3", "user", "q3", 0, session_id="s3", tokens_used=7),
        turn("a3", "assistant", "a3", 1, session_id="s3", tokens_used=7, reward=0.1, reward_source="judge"),
    ]
    run = run_task(tmp_path, rows, "++curation.steps.min_reward.threshold=0.3")

    stats = run.stats
    _stats_schema_valid(stats)
    section = stats["files"]["sft.jsonl"]
    assert section["task"] == "sft"
    assert section["form"] is None
    assert (section["examples"], section["records"], section["groups"]) == (2, 4, 2)
    assert section["by_role"] == {"assistant": 2, "user": 2}
    assert section["by_tenant"] == {"__none__": 2, "t1": 2}
    assert section["by_source"] == {"__none__": 4}
    assert section["by_category"] == {"__none__": 3, "accepted": 1}
    assert section["records_per_group"] == {"count": 2, "min": 2, "median": 2, "p95": 2, "max": 2, "mean": 2}
    tokens = section["tokens_per_example"]
    assert (tokens["method"], tokens["min"], tokens["max"], tokens["mean"]) == ("tokens_used", 10, 40, 25)
    rewards = section["rewards"]
    assert (rewards["count"], rewards["min"], rewards["max"]) == (2, 0.4, 0.9)
    assert rewards["by_source"] == {"judge": 1, "vrf": 1}
    assert section["excluded_by_step"]["min_reward"] == {"below_min_reward": 1}
    assert section["excluded_by_step"]["task"] == {"no_assistant_turn": 1}


def test_preference_lengths_fall_back_to_the_proxy_and_say_so(tmp_path):
    rows = [
        turn("u1", "user", "abcdefgh", 0),
        turn("a1", "assistant", "abcd", 1, reward=1.0),
        turn("a2", "assistant", "abcdefghi", 2, reward=0.0),
    ]
    proxied = run_task(tmp_path / "proxy", rows, "task=preference").stats["files"]["preference.jsonl"]
    assert proxied["form"] == "paired"
    assert proxied["tokens_per_example"]["method"] == "length_proxy"
    # ceil(chars / 4): 2 (prompt) + 1 (chosen) + 3 (rejected)
    assert proxied["tokens_per_example"]["max"] == 6

    rows[0]["tokens_used"] = 100
    mixed = run_task(tmp_path / "mixed", rows, "task=preference", "task.form=ranked").stats
    _stats_schema_valid(mixed)
    section = mixed["files"]["preference.jsonl"]
    assert section["form"] == "ranked"
    assert (section["tokens_per_example"]["method"], section["tokens_per_example"]["max"]) == ("mixed", 104)


def test_train_and_eval_files_have_their_own_sections(tmp_path):
    rows = []
    for n in range(12):
        session = f"s{n}"  # distinct texts: the default chain drops repeated conversations
        rows += [
            turn(f"u{n}", "user", session, 0, session_id=session),
            turn(f"a{n}", "assistant", session, 1, session_id=session),
        ]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out"
    run_pipeline(out, [f"source.path={source}", "task=rollout", "split.eval_fraction=0.5"])

    stats = json.loads((out / "stats.json").read_text("utf-8"))
    _stats_schema_valid(stats)
    assert set(stats["files"]) == {"rollout.train.jsonl", "rollout.eval.jsonl"}
    for name, section in stats["files"].items():
        lines = read_jsonl(out / name)
        assert section["examples"] == len(lines) > 0
        assert section["records"] == sum(len(line["provenance"]["record_ids"]) for line in lines)
    assert sum(section["examples"] for section in stats["files"].values()) == 12


def _word_tokenizer(path):
    """A tiny whitespace WordLevel tokenizer saved as tokenizer.json: one token per word."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    tokenizer = Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.save(str(path))
    return path


def test_a_configured_tokenizer_counts_every_record(tmp_path):
    tokenizer = _word_tokenizer(tmp_path / "tokenizer.json")
    rows = [
        turn("u1", "user", "one two three", 0, tokens_used=100),
        turn("a1", "assistant", "four five", 1),
    ]
    stats = run_task(tmp_path, rows, f"stats.tokenizer={tokenizer}").stats
    _stats_schema_valid(stats)
    tokens = stats["files"]["sft.jsonl"]["tokens_per_example"]
    assert (tokens["method"], tokens["max"]) == ("tokenizer", 5)


def test_an_unloadable_tokenizer_is_a_one_line_error(tmp_path):
    source = write_jsonl(tmp_path / "in.jsonl", [turn("u1", "user", "q", 0)])
    done = run_cli([f"source.path={source}", f"stats.tokenizer={tmp_path / 'missing.json'}"], tmp_path)

    assert done.returncode == 2
    assert done.stderr.startswith("distill: error: stats.tokenizer: cannot load")
    assert "Traceback" not in done.stderr


def _numpy_summary(values):
    """What stats.json gave when one process held every value in one sorted array (numpy's median, percentile,
    min and max), with the mean from the exact sum."""
    import math

    import numpy as np

    array = np.sort(np.asarray(values, dtype=np.float64))

    def number(value):
        value = float(value)
        return int(value) if value.is_integer() and abs(value) <= 2**53 else round(value, 6)

    return {
        "count": len(array), "min": number(array.min()), "median": number(np.median(array)),
        "p95": number(np.percentile(array, 95)), "max": number(array.max()),
        "mean": number(math.fsum(array.tolist()) / len(array)),
    }


def test_quantiles_over_many_partitions_spilled_values_are_numpys_over_one_array(tmp_path):
    import random

    import numpy as np

    from distill.output.stats import (
        SpilledValues, StatsPart, histogram, linear_quantile, merged_histogram, order_statistic, summary,
    )

    rng = random.Random(7)
    for case in range(150):
        count = rng.choice([1, 2, 3, 4, 5, 19, 20, 21, 100, 101, rng.randint(1, 3000)])
        kind = case % 3
        if kind == 0:  # token counts: small integers, many ties
            values = [float(rng.randint(0, 40)) for _ in range(count)]
        elif kind == 1:  # rewards: signed decimals, zeros of both signs
            values = [rng.choice([-0.0, 0.0, round(rng.uniform(-1, 1), 3)]) for _ in range(count)]
        else:
            values = [rng.uniform(-1e6, 1e6) for _ in range(count)]
        cuts = sorted(rng.randint(0, count) for _ in range(rng.randint(0, 9)))
        chunks = [np.array(values[a:b]) for a, b in zip([0, *cuts], [*cuts, count])]
        rng.shuffle(chunks)
        parts = []
        for number, chunk in enumerate(chunks):
            part = StatsPart(rewards=[chunk])
            part.spill(tmp_path / f"{case}-{number}")
            parts.extend(part.rewards)
        assert all(isinstance(spilled, SpilledValues) for spilled in parts)
        # Order statistics and the p95 equal to numpy's (float equality: exact, but for the sign of a zero, which numpy's
        # unstable sort does not fix either).
        array = np.sort(np.array(values))
        mapped = [np.load(spilled.path, mmap_mode="r") for spilled in parts]
        ranks = sorted({0, count - 1, count // 2, max(count // 2 - 1, 0), *(rng.randrange(count) for _ in range(5))})
        assert [order_statistic(mapped, rank) for rank in ranks] == [array[rank] for rank in ranks]
        p95 = linear_quantile(lambda rank: order_statistic(mapped, rank), count, 0.95)
        assert p95 == np.percentile(array, 95), (case, values)
        expected = _numpy_summary(values)
        assert summary(parts) == expected, (case, values)
        assert summary(chunks) == expected
        edges = (-1, -0.5, 0, 0.5, 1)
        assert merged_histogram(parts, edges) == histogram(values, edges)
    assert summary([]) == {"count": 0, "min": None, "median": None, "p95": None, "max": None, "mean": None}


def test_a_spilled_part_keeps_where_its_values_are_not_the_values(tmp_path):
    import pickle

    import numpy as np

    from distill.output.stats import StatsPart, SpilledValues

    part = StatsPart(tokens_per_record=[np.arange(100_000, dtype=np.float64), np.arange(5, dtype=np.float64)])
    part.spill(tmp_path / "train-0")
    (spilled,) = part.tokens_per_record
    assert isinstance(spilled, SpilledValues) and spilled.count == 100_005 and part.rewards == []
    assert list(np.load(spilled.path)[:7]) == [0, 0, 1, 1, 2, 2, 3]
    assert len(pickle.dumps(part)) < 2_000  # what a reduce's marker and its result hold of it
