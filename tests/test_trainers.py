"""Real trainers load what distill writes: TRL trains 2 steps of SFT, DPO, KTO and GRPO on a tiny model built here
(no hub download), from the trl-flavoured files and from the openai-flavoured ones.

Marked `trainers` (deselect with `-m "not trainers"`); skipped where TRL or torch is not installed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from helpers import read_jsonl, run_pipeline, write_jsonl

pytestmark = pytest.mark.trainers
# Everything is local: never wait on a hub the machine may not reach (a blocked look-up costs its whole timeout).
for variable in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(variable, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch = pytest.importorskip("torch")
trl = pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")
transformers = pytest.importorskip("transformers")

SAMPLE = Path(__file__).resolve().parents[1] / "distill" / "data" / "sample" / "agent_sessions.jsonl"

# A chat template in the shape transformers renders: roles, text, tool calls (arguments a dict in TRL's shape, a
# JSON string in OpenAI's), and the generation prompt.
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|> {{ m.get('content') or '' }}"
    "{% for c in m.get('tool_calls') or [] %} <call> {{ c['function']['name'] }} "
    "{{ c['function']['arguments'] if c['function']['arguments'] is string else c['function']['arguments'] | tojson }}"
    "{% endfor %} <|end|> {% endfor %}{% if add_generation_prompt %}<|assistant|> {% endif %}"
)
SPECIALS = ["<unk>", "<pad>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>", "<|tool|>", "<call>"]


def tiny_tokenizer(texts: list[str], directory: Path):
    """A word-level tokenizer over the files' own words, with the chat template, saved and loaded the way a
    trainer loads one."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tokenizer.train_from_iterator(texts, trainers.WordLevelTrainer(vocab_size=2000, special_tokens=SPECIALS))
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token="<unk>", pad_token="<pad>", eos_token="<|end|>", bos_token=None
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(directory)
    return transformers.AutoTokenizer.from_pretrained(directory)


def save_tiny_model(tokenizer, directory: Path) -> Path:
    """A 2-layer Qwen2 with hidden size 16, saved beside its tokenizer so trainers can load it (and their
    reference copy) by path, as they load any model."""
    torch.manual_seed(0)
    config = transformers.Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=2048, pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id, bos_token_id=None,
    )
    transformers.Qwen2ForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def tiny_model(files):
    return transformers.AutoModelForCausalLM.from_pretrained(files["model"])


def texts_of(path: Path) -> list[str]:
    return [json.dumps(row) for row in read_jsonl(path)]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The bundled sample (user turns of the eval prompts given an answer) written as trl and openai files."""
    root = tmp_path_factory.mktemp("trainers")
    rows = []
    for raw in SAMPLE.read_bytes().splitlines():
        try:
            row = json.loads(raw)
        except ValueError:
            row = None
        if isinstance(row, dict) and row.get("role") == "user" and row.get("source") == "eval-harness":
            row["answer"] = "42"
        rows.append(row if isinstance(row, dict) else raw)
    sample = write_jsonl(root / "sample.jsonl", rows)
    runs = {
        "sft": ["task=sft"],
        "dpo": ["task=preference"],
        "kto": ["task=preference", "task.form=unpaired", "task.min_reward=0.5"],
        "grpo": ["task=rollout", "+source.fields.ground_truth=answer"],
        "openai_sft": ["task=sft", "output.flavor=openai"],
        "openai_dpo": ["task=preference", "output.flavor=openai"],
    }
    out = {}
    for name, overrides in runs.items():
        result = run_pipeline(root / name, [f"source.path={sample}", "split=none", *overrides])
        out[name] = result.output_dir / result.files[0]
    texts = [text for path in out.values() for text in texts_of(path)]
    out["tokenizer"] = tiny_tokenizer(texts, root / "tokenizer")
    out["model"] = save_tiny_model(out["tokenizer"], root / "model")
    out["root"] = root
    return out


def load(path: Path):
    datasets.disable_progress_bars()
    return datasets.load_dataset("json", data_files=str(path), split="train")


def common(root: Path, name: str) -> dict:
    return {
        "output_dir": str(root / f"model-{name}"), "max_steps": 2, "per_device_train_batch_size": 2,
        "report_to": [], "save_strategy": "no", "logging_steps": 1, "use_cpu": True, "seed": 0,
        "dataloader_num_workers": 0,
    }


def trained(trainer) -> None:
    result = trainer.train()
    assert result.global_step == 2
    assert all(torch.isfinite(torch.tensor(log["loss"])) for log in trainer.state.log_history if "loss" in log)


def test_sft_trains_on_the_trl_file(files):
    tokenizer = files["tokenizer"]
    args = trl.SFTConfig(**common(files["root"], "sft"), max_length=256)
    trained(trl.SFTTrainer(model=tiny_model(files), args=args, train_dataset=load(files["sft"]), processing_class=tokenizer))


def test_sft_trains_on_the_openai_file(files):
    tokenizer = files["tokenizer"]
    args = trl.SFTConfig(**common(files["root"], "openai-sft"), max_length=256)
    dataset = load(files["openai_sft"])
    assert dataset.column_names == ["messages"]
    trained(trl.SFTTrainer(model=tiny_model(files), args=args, train_dataset=dataset, processing_class=tokenizer))


def test_dpo_trains_on_the_trl_file(files):
    tokenizer = files["tokenizer"]
    args = trl.DPOConfig(**common(files["root"], "dpo"), max_length=256)
    trainer = trl.DPOTrainer(model=tiny_model(files), args=args, train_dataset=load(files["dpo"]), processing_class=tokenizer)
    trained(trainer)


def test_dpo_trains_on_the_openai_file_with_its_keys_renamed(files):
    tokenizer = files["tokenizer"]
    rows = [
        {"prompt": r["input"]["messages"], "chosen": r["preferred_output"], "rejected": r["non_preferred_output"]}
        for r in read_jsonl(files["openai_dpo"])
    ]
    dataset = datasets.Dataset.from_list(rows)
    args = trl.DPOConfig(**common(files["root"], "openai-dpo"), max_length=256)
    trained(trl.DPOTrainer(model=tiny_model(files), args=args, train_dataset=dataset, processing_class=tokenizer))


def test_kto_trains_on_the_trl_file(files):
    tokenizer = files["tokenizer"]
    dataset = load(files["kto"])
    assert set(dataset["label"]) == {True, False}
    args = trl.KTOConfig(**common(files["root"], "kto"), max_length=256)
    trained(trl.KTOTrainer(model=tiny_model(files), args=args, train_dataset=dataset, processing_class=tokenizer))


def test_grpo_trains_on_the_rollout_prompts_with_their_ground_truth(files):
    tokenizer = files["tokenizer"]
    dataset = load(files["grpo"])
    seen = []

    def exact(completions, ground_truth, **_):
        seen.extend(ground_truth)
        # Prompts whose records carry no ground_truth have none (null) in the trl file: TRL passes the column as is.
        return [float(truth is not None and truth in str(completion)) for completion, truth in zip(completions, ground_truth)]

    args = trl.GRPOConfig(
        **common(files["root"], "grpo"), num_generations=2, max_completion_length=8, generation_batch_size=2,
    )
    trained(trl.GRPOTrainer(model=tiny_model(files), reward_funcs=exact, args=args, train_dataset=dataset, processing_class=tokenizer))
    assert seen and set(seen) <= {"42", None}
