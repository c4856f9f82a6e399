"""How long report.html takes to write and how big it is, in a real run over the bench corpus.

    python bench/report.py --records 100000            # generates bench/data/100000 first if it is missing
    python bench/report.py --records 1000000 --chain default
    python bench/report.py --worst-case                 # the bound: the largest digest a run can hand the report

Runs the pipeline in this process (as `python -m distill` does) with the `curation=thorough` chain (every section of
the report filled: near-duplicate clusters, decontamination hits, redactions) or the default one, times the
documents step (`write_documents`: the report rendered from the run's digest and written), and prints and saves
(bench/results/report_<records>_<chain>.json) the seconds, the report's bytes and the whole run's seconds.

`--worst-case` renders the report of the bundled sample's run with a digest inflated to the most it can hold: every
quarantine reason with its 5 sample rows of 64 KiB records, 10,000 errors and a 100 KB detail each, 3 lines per
file of 500 one-megabyte messages with tool calls plus 100 such candidates, 100,000 outputs and 100,000 tenants.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import distill.runner as runner  # noqa: E402
from distill.config import build_settings  # noqa: E402
from generate import generate  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--chain", choices=("thorough", "default"), default="thorough")
    parser.add_argument("--worst-case", action="store_true")
    args = parser.parse_args()
    if args.worst_case:
        worst_case()
        return
    data = HERE / "data" / str(args.records)
    if not (data / "truth.json").exists():
        print(f"generating {args.records} records into {data} ...", file=sys.stderr)
        generate(args.records, data)
    overrides = [f"source.path={data / 'logs.jsonl'}"]
    if args.chain == "thorough":
        overrides += ["curation=thorough", f"++curation.steps.decontaminate.eval_sets=[{data / 'evals' / 'heldout.jsonl'}]"]
    with initialize_config_module(version_base="1.3", config_module="distill.conf"):
        config = OmegaConf.to_container(compose(config_name="config", overrides=overrides), resolve=True)

    timed: dict[str, float] = {}
    write_documents = runner.write_documents

    def timed_documents(digest, output_dir):  # type: ignore[no-untyped-def]
        started = time.perf_counter()
        entries = write_documents(digest, output_dir)
        timed["documents_seconds"] = time.perf_counter() - started
        return entries

    runner.write_documents = timed_documents
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        result = runner.run(build_settings(config), Path(tmp), config=config, command="bench/report.py")
        run_seconds = time.perf_counter() - started
        report = Path(tmp) / "report.html"
        figures = {
            "records": args.records,
            "chain": args.chain,
            "input_rows": result.manifest["counts"]["input_rows"],
            "examples": result.manifest["counts"]["examples"],
            "quarantined_rows": result.manifest["counts"]["quarantined_rows"],
            "run_seconds": round(run_seconds, 1),
            "report_seconds": round(timed["documents_seconds"], 3),
            "report_bytes": report.stat().st_size,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
        }
    print(json.dumps(figures, indent=2))
    out = HERE / "results" / f"report_{args.records}_{args.chain}.json"
    out.write_text(json.dumps(figures, indent=2) + "\n")


def worst_case() -> None:
    from distill.output.documents import RunDigest
    from distill.output.report import render_report
    from distill.reasons import Reason

    with initialize_config_module(version_base="1.3", config_module="distill.conf"):
        config = OmegaConf.to_container(compose(config_name="config"), resolve=True)
    with tempfile.TemporaryDirectory() as tmp:
        result = runner.run(build_settings(config), Path(tmp), config=config)
        stats = json.loads((Path(tmp) / "stats.json").read_text())
    manifest = {**result.manifest, "quarantine": {reason.value: 10**6 for reason in Reason}}
    manifest["outputs"] = [{"path": f"f{i}", "sha256": "0" * 64, "rows": i} for i in range(100_000)]
    for section in stats["files"].values():
        section["by_tenant"] = {f"tenant-{i}": i for i in range(100_000)}
    messages = [{"role": "assistant", "content": "y" * 1_000_000, "tool_calls": [{"arguments": "b" * 100_000}]}] * 500
    line = {"id": "x", "messages": messages, "candidates": [{"messages": messages, "rank": 1}] * 100}
    row = {"step": "parse", "reason": "x", "errors": ["e" * 100_000] * 10_000, "record_id": "r",
           "record": {"text": "z" * 65_536, "metadata": "m" * 65_536}, "detail": {"d": "d" * 100_000}}
    digest = RunDigest(manifest, stats, {reason.value: [row] * 5 for reason in Reason},
                       {name: [line] * 3 for name in stats["files"]})
    started = time.perf_counter()
    html = render_report(digest)
    seconds = time.perf_counter() - started
    print(json.dumps({"worst_case_report_bytes": len(html.encode()), "render_seconds": round(seconds, 3)}, indent=2))


if __name__ == "__main__":
    main()
