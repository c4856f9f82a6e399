"""Loads distill's verl-flavoured Parquet with verl's own `RLHFDataset`, in verl's virtualenv.

Usage: python verl_reader.py SPEC_JSON, a list of {"path", "expected"}.
Builds the dataset the way verl's trainer does (verl/utils/dataset/rl_dataset.py: `RLHFDataset(data_files,
tokenizer, config)`, which applies the tokenizer's chat template to every prompt to filter overlong ones), reads
every row with `__getitem__`, batches them with its `collate_fn`, and reads each row's ground truth the way verl's
reward managers do (`non_tensor_batch["reward_model"]["ground_truth"]`, verl/workers/reward_manager/naive.py).
Prints one JSON line; exits non-zero when a row is missing or malformed. Run by tests/test_readers.py.
"""

import json
import os
import sys
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} <|end|> {% endfor %}"
    "{% if add_generation_prompt %}<|assistant|> {% endif %}"
)


def tiny_tokenizer(texts):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tokenizer.train_from_iterator(texts, trainers.WordLevelTrainer(vocab_size=4000, special_tokens=["<unk>", "<pad>", "<|end|>"]))
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>", pad_token="<pad>", eos_token="<|end|>")
    fast.chat_template = TEMPLATE
    return fast


def check(path, expected):
    import pyarrow.parquet as pq
    from omegaconf import OmegaConf
    from verl.utils.dataset.rl_dataset import RLHFDataset, collate_fn

    rows = pq.read_table(path).to_pylist()
    tokenizer = tiny_tokenizer([json.dumps(row) for row in rows])
    config = OmegaConf.create({
        "prompt_key": "prompt", "max_prompt_length": 100000, "filter_overlong_prompts": True,
        "filter_overlong_prompts_workers": 1, "cache_dir": tempfile.mkdtemp(), "truncation": "error",
    })
    dataset = RLHFDataset(data_files=[path], tokenizer=tokenizer, config=config)
    items = [dataset[i] for i in range(len(dataset))]
    problems = []
    for position, item in enumerate(items):
        if item["index"] != position:
            problems.append(f"row {position}: extra_info.index {item['index']}")
        if not item["raw_prompt"] or any(set(m) < {"role", "content"} for m in item["raw_prompt"]):
            problems.append(f"row {position}: prompt messages need role and content")
        if not isinstance(item["data_source"], str) or not item["data_source"]:
            problems.append(f"row {position}: data_source")
    batch = collate_fn(items) if items else {}
    truths = [reward_model["ground_truth"] for reward_model in batch.get("reward_model", [])]
    if any(not isinstance(t, str) or not t for t in truths):
        problems.append("a reward_model.ground_truth is not a non-empty string")
    return {"path": path, "rows": len(items), "expected": expected, "problems": problems,
            "batch_keys": sorted(batch), "ok": len(items) == expected and len(truths) == expected and not problems}


if __name__ == "__main__":
    reports = [check(**spec) for spec in json.loads(sys.argv[1])]
    print("READER-REPORT " + json.dumps(reports))
    sys.exit(0 if all(r["ok"] for r in reports) else 1)
