"""Benchmark: exact_dedup's text keys (each text's exact form and its role-seeded XXH3) over real bench texts, the
compiled forms (`distill/curation/_exact_forms.c`) against the pure-Python path, in this process.

The keys are what exact_dedup's `keys` computes for a batch; both paths must give the same ones (checked first). Texts
come from the first lines of the bench corpus, in batches of the default `batch_size`; each path's figure is its best
of `--rounds`, in microseconds a text.

    python bench/exact_forms.py --records 1000000 --lines 40960
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # this checkout's distill, whichever one is installed

import numpy as np  # noqa: E402
import orjson  # noqa: E402

from distill.collector import keep_freed_memory  # noqa: E402
from distill.curation import textnorm  # noqa: E402
from distill.curation.steps.exact_dedup import _role_seed, role_seeded  # noqa: E402

BATCH = 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=1_000_000, help="which bench/data/<records> corpus to read")
    parser.add_argument("--lines", type=int, default=40_960, help="how many of its first lines")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    keep_freed_memory()  # as every worker does: orjson's and bytes' buffers then come from a warm heap

    corpus = REPO / "bench" / "data" / str(args.records) / "logs.jsonl"
    if not corpus.exists():
        sys.exit(f"{corpus} is missing: python bench/generate.py --records {args.records} --out {corpus.parent}")
    texts, seeds = [], []
    with open(corpus, "rb") as handle:
        for line in itertools.islice(handle, args.lines):
            row = orjson.loads(line)
            if row.get("text"):
                texts.append(row["text"])
                seeds.append(_role_seed(row.get("role") or ""))
    batches = [(texts[i : i + BATCH], seeds[i : i + BATCH]) for i in range(0, len(texts), BATCH)]
    compiled = textnorm.ascii_exact_forms
    paths = {"pure Python": textnorm.ascii_exact_forms_in_python, "compiled": compiled}
    if compiled is textnorm.ascii_exact_forms_in_python:
        sys.exit("distill/curation/_exact_forms.c is not built here (pip install -e . with a C compiler)")

    def keys(forms_of) -> list[np.ndarray]:
        textnorm.ascii_exact_forms = forms_of
        return [
            np.fromiter(map(role_seeded, textnorm.exact_forms(batch), batch_seeds), dtype=np.uint64, count=len(batch))
            for batch, batch_seeds in batches
        ]

    reference = keys(paths["pure Python"])
    assert all(np.array_equal(a, b) for a, b in zip(reference, keys(compiled))), "the two paths' keys differ"
    print(f"{len(texts):,} texts, {sum(map(len, texts)) / len(texts):,.0f} characters on average")
    for name, forms_of in paths.items():
        best = min(timed(lambda: keys(forms_of)) for _ in range(args.rounds))
        print(f"{name:12s} {best / len(texts) * 1e6:.2f} µs a text (form + XXH3)")
    textnorm.ascii_exact_forms = compiled


def timed(work) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


if __name__ == "__main__":
    main()
