"""Loads distill's llamafactory-flavoured files with LLaMA-Factory's own loader, in LLaMA-Factory's virtualenv.

Usage: python llamafactory_reader.py SPEC_JSON, a list of {"run_dir", "stage", "name", "expected"}.
Reads RUN_DIR/dataset_info.json through `get_dataset_list`, loads and aligns the file with its converter
(`_load_single_dataset` -> `align_dataset`), then tokenizes it with a template (`get_dataset`, which runs the
FunctionFormatter on function_call turns), on a word-level tokenizer built here. Prints one JSON line and exits
non-zero when a row was skipped or broken. Run by tests/test_readers.py; never imported by distill.
"""

import json
import os
import sys
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def tiny_tokenizer(directory, texts):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<pad>", "<eos>"]
    tokenizer = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tokenizer.train_from_iterator(texts, trainers.WordLevelTrainer(vocab_size=4000, special_tokens=specials))
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>", pad_token="<pad>", eos_token="<eos>")
    fast.save_pretrained(directory)


def check(run_dir, stage, name, expected):
    from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
    from llamafactory.data.loader import _load_single_dataset
    from llamafactory.data.parser import get_dataset_list
    from llamafactory.hparams import get_train_args
    from llamafactory.model import load_tokenizer

    info = json.load(open(os.path.join(run_dir, "dataset_info.json")))
    texts = [open(os.path.join(run_dir, entry["file_name"])).read() for entry in info.values()]
    work = tempfile.mkdtemp()
    tiny_tokenizer(work, texts)
    model_args, data_args, training_args, _, _ = get_train_args({
        "stage": stage, "do_train": True, "model_name_or_path": work, "dataset": name, "dataset_dir": run_dir,
        "template": "default", "cutoff_len": 4096, "output_dir": os.path.join(work, "out"), "overwrite_cache": True,
        "report_to": "none", "finetuning_type": "full", "use_cpu": True,
    })
    (attr,) = get_dataset_list([name], run_dir)
    aligned = _load_single_dataset(attr, model_args, data_args, training_args)
    broken = [i for i, row in enumerate(aligned) if not row["_prompt"] or not row["_response"]]
    tokenizer_module = load_tokenizer(model_args)
    template = get_template_and_fix_tokenizer(tokenizer_module["tokenizer"], data_args)
    # As LLaMA-Factory's DPO workflow does (train/dpo/workflow.py): preference data loads through the "rm" stage.
    data_stage = "rm" if stage == "dpo" else stage
    module = get_dataset(template, model_args, data_args, training_args, stage=data_stage, **tokenizer_module)
    tokenized = len(module["train_dataset"])
    report = {"run_dir": run_dir, "name": name, "stage": stage, "rows": len(aligned), "broken": broken, "tokenized": tokenized,
              "columns": sorted(module["train_dataset"].column_names)}
    report["ok"] = len(aligned) == expected and not broken and tokenized == expected
    return report


if __name__ == "__main__":
    reports = [check(**spec) for spec in json.loads(sys.argv[1])]
    print("READER-REPORT " + json.dumps(reports))
    sys.exit(0 if all(r["ok"] for r in reports) else 1)
