"""Benchmark: records/s and peak RSS of each step, the whole chain, the I/O floor and datatrove's MinHash dedup,
plus precision/recall of near_dedup and decontaminate against the planted truth. Not a test.

    pip install -e '.[bench]'
    python bench/run.py --records 100000 --peer     # generates bench/data/100000 if missing
    python bench/run.py --records 1000000

Every measurement runs in its own child process (peak RSS = the child's ru_maxrss, from wait4). Results go to
bench/results/<records>.json; bench/RESULTS.md is re-rendered from every results file present.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))

from generate import generate, jaccard  # noqa: E402

THRESHOLD = 0.8
# name -> (step kind, params): each runs alone on the same parsed records.
STEPS: dict[str, tuple[str, dict[str, Any]]] = {
    "exact_dedup (group)": ("exact_dedup", {}),
    "exact_dedup (record)": ("exact_dedup", {"scope": "record"}),
    "near_dedup (group)": ("near_dedup", {"threshold": THRESHOLD}),
    "near_dedup (record)": ("near_dedup", {"scope": "record", "threshold": THRESHOLD}),
    "semantic_dedup": ("semantic_dedup", {}),
    "decontaminate (overlap)": ("decontaminate", {"eval_sets": ["{evals}"]}),
    "decontaminate (any13)": ("decontaminate", {"eval_sets": ["{evals}"], "preset": "any13"}),
    "scrub_secrets": ("scrub_secrets", {}),
}


# -- children: each prints one JSON object on its last stdout line --------------------------------------------------

def child_floor(data: Path) -> dict[str, Any]:
    """The floor: read every line, parse it with orjson, serialise it back, write it."""
    started = time.perf_counter()
    rows = 0
    with (data / "logs.jsonl").open("rb") as source, open(os.devnull, "wb") as sink:
        for line in source:
            sink.write(orjson.dumps(orjson.loads(line)) + b"\n")
            rows += 1
    return {"seconds": time.perf_counter() - started, "rows": rows}


def _parsed(data: Path) -> tuple[list, float]:
    from distill.quarantine import Ledger
    from distill.curation.chain import read_records
    from distill.sources.jsonl import JsonlParams, JsonlSource

    settings = type("S", (), {"source": JsonlSource(JsonlParams(kind="jsonl", path=str(data / "logs.jsonl")))})
    started = time.perf_counter()
    records, _ = read_records(settings, Ledger())
    return records, time.perf_counter() - started


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_steps(data: Path, names: list[str]) -> dict[str, Any]:
    """Parse once, then run each named step alone over all parsed records."""
    from distill.executor import run_step
    from distill.grouping import key_function
    from distill.quarantine import Drop
    from distill.curation.steps import STEPS as REGISTRY
    from distill.curation.steps import StepContext

    records, parse_seconds = _parsed(data)
    out: dict[str, Any] = {"parse": {"seconds": parse_seconds, "rss_mib": _rss_mib()}, "steps": {}, "drops": {}}
    context = StepContext(group_key=key_function("session_id"))
    for name in names:
        kind, params = STEPS[name]
        params = json.loads(json.dumps(params).replace("{evals}", str(data / "evals" / "heldout.jsonl")))
        cls = REGISTRY.get(kind)
        step = cls(kind, cls.Params.model_validate(params), context)
        gc.collect()
        started = time.perf_counter()
        verdicts = run_step(step, records, 4096)
        seconds = time.perf_counter() - started
        drops = {r.id: v for r, v in zip(records, verdicts) if isinstance(v, Drop)}
        out["steps"][name] = {"seconds": seconds, "dropped": len(drops), "rss_mib": _rss_mib(), "extra": step.manifest_extra()}
        if name in ("near_dedup (record)", "decontaminate (overlap)", "decontaminate (any13)"):
            out["drops"][name] = {rid: (d.detail or {}).get("duplicate_of") for rid, d in drops.items()}
        del verdicts, drops
    return out


def child_peer(data: Path, work: Path) -> dict[str, Any]:
    """datatrove's default MinHash pipeline (4 stages, one worker), reading a JSONL of {id, text}."""
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup.minhash import (
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers.jsonl import JsonlWriter

    config = MinhashConfig()
    reader = lambda: JsonlReader(str(work / "input"), compression=None)  # noqa: E731
    stages = [
        [reader(), MinhashDedupSignature(output_folder=str(work / "sigs"), config=config)],
        [MinhashDedupBuckets(input_folder=str(work / "sigs"), output_folder=str(work / "buckets"), config=config)],
        [MinhashDedupCluster(input_folder=str(work / "buckets"), output_folder=str(work / "remove"), config=config)],
        [reader(), MinhashDedupFilter(input_folder=str(work / "remove"),
                                      exclusion_writer=JsonlWriter(str(work / "removed"), compression=None)),
         JsonlWriter(str(work / "kept"), compression=None)],
    ]
    started = time.perf_counter()
    for number, pipeline in enumerate(stages):
        tasks = config.num_buckets if number == 1 else 1
        LocalPipelineExecutor(pipeline=pipeline, tasks=tasks, workers=1, logging_dir=str(work / f"logs{number}")).run()
    seconds = time.perf_counter() - started
    removed = [orjson.loads(line)["id"] for path in sorted((work / "removed").glob("*.jsonl")) for line in path.open("rb")]
    return {"seconds": seconds, "removed": removed, "config": str(config)}


# -- the parent -----------------------------------------------------------------------------------------------------

def measure(args: list[str]) -> dict[str, Any]:
    """Runs a child (`--child ...` of this file, or a command) and returns its JSON (last stdout line), its wall
    seconds and its own peak RSS in MiB (from wait4, so no other process counts)."""
    command = [sys.executable, __file__, *args] if args[0] == "--child" else args
    with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=stdout, stderr=stderr, cwd=REPO)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)  # reaped here: keep Popen from waiting again
        wall = time.perf_counter() - started
        stdout.seek(0), stderr.seek(0)
        out, err = stdout.read().decode(), stderr.read().decode()
    if process.returncode != 0:
        raise SystemExit(f"bench: {' '.join(map(str, command))} failed:\n{err[-3000:]}")
    lines = out.strip().splitlines()
    result = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {}
    result["wall_seconds"] = wall
    result["peak_rss_mib"] = usage.ru_maxrss / 1024
    return result


def machine() -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    memory = next((int(line.split()[1]) // 1024 // 1024 for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal")), None)
    import numpy

    return {
        "cpu": cpu, "cores": os.cpu_count(), "memory_gib": memory, "python": platform.python_version(),
        "numpy": numpy.__version__, "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def precision_recall(predicted: set[str], truth: set[str]) -> dict[str, float]:
    hits = len(predicted & truth)
    return {
        "precision": hits / len(predicted) if predicted else 1.0,
        "recall": hits / len(truth) if truth else 1.0,
        "predicted": len(predicted), "truth": len(truth),
    }


GREY_ZONE = (0.75, 0.85)  # planted pairs this close to the threshold measure estimator noise more than anything


def near_truth(truth: dict[str, Any]) -> set[str]:
    return {c["id"] for c in truth["exact_copies"]} | {c["id"] for c in truth["near_copies"] if c["jaccard"] >= THRESHOLD}


def grey_zone(truth: dict[str, Any]) -> set[str]:
    return {c["id"] for c in truth["near_copies"] if GREY_ZONE[0] <= c["jaccard"] < GREY_ZONE[1]}


def near_quality(predicted: set[str], truth: dict[str, Any]) -> dict[str, Any]:
    grey = grey_zone(truth)
    return {
        **precision_recall(predicted, near_truth(truth)),
        "outside_grey_zone": precision_recall(predicted - grey, near_truth(truth) - grey),
    }


def verified_precision(data: Path, drops: dict[str, str]) -> float:
    """Share of near_dedup drops whose exact word-5-gram Jaccard with the survivor they name is >= THRESHOLD."""
    wanted = set(drops) | set(drops.values())
    texts = {}
    with (data / "logs.jsonl").open("rb") as handle:
        for line in handle:
            row = orjson.loads(line)
            if row["id"] in wanted:
                texts[row["id"]] = row["text"]
    good = sum(jaccard(texts[a], texts[b]) >= THRESHOLD for a, b in drops.items())
    return good / len(drops) if drops else 1.0


def run(records: int, peer: bool, data: Path) -> dict[str, Any]:
    if not (data / "truth.json").exists():
        print(f"generating {records} records into {data} ...", file=sys.stderr)
        generate(records, data)
    truth = json.loads((data / "truth.json").read_text())
    results: dict[str, Any] = {"records": records, "machine": machine(), "input_bytes": truth["meta"]["bytes"]}
    print("floor ...", file=sys.stderr)
    results["floor"] = measure(["--child", "floor", str(data)])
    print("steps ...", file=sys.stderr)
    steps = measure(["--child", "steps", str(data), *STEPS])
    drops = steps.pop("drops")
    results["steps"] = steps
    with tempfile.TemporaryDirectory() as tmp:
        for chain, overrides in {
            "default chain (sft)": [],
            "thorough chain (sft)": ["curation=thorough", "++curation.steps.scrub_secrets.library=detect_secrets",
                                     f"++curation.steps.decontaminate.eval_sets=[{data / 'evals' / 'heldout.jsonl'}]"],
        }.items():
            print(f"{chain} ...", file=sys.stderr)
            command = [sys.executable, "-m", "distill", f"source.path={data / 'logs.jsonl'}", *overrides,
                       f"hydra.run.dir={Path(tmp) / chain.split()[0]}"]
            results.setdefault("chains", {})[chain] = measure(command)
    near = drops["near_dedup (record)"]
    results["quality"] = {
        "near_dedup (record)": {**near_quality(set(near), truth), "verified_precision": verified_precision(data, near)},
        **{name: precision_recall(set(drops[name]), {leak["id"] for leak in truth["leaks"]})
           for name in ("decontaminate (overlap)", "decontaminate (any13)")},
    }
    if peer:
        print("datatrove ...", file=sys.stderr)
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            (work / "input").mkdir()
            with (data / "logs.jsonl").open("rb") as source, (work / "input" / "docs.jsonl").open("wb") as sink:
                for line in source:
                    row = orjson.loads(line)
                    sink.write(orjson.dumps({"id": row["id"], "text": row["text"]}) + b"\n")
            peer_result = measure(["--child", "peer", str(data), str(work)])
        removed = set(peer_result.pop("removed"))
        results["peer"] = {**peer_result, "quality": near_quality(removed, truth)}
    return results


# -- the report -----------------------------------------------------------------------------------------------------

def rate(records: int, seconds: float) -> str:
    return f"{records / seconds:,.0f}" if seconds > 0 else "-"


def render(results: dict[str, Any]) -> str:
    n = results["records"]
    floor = results["floor"]["seconds"]
    mib = results["input_bytes"] / 2**20
    lines = [
        f"## {n:,} records ({mib:,.0f} MiB of JSONL)",
        "",
        f"Command: `{results['command']}`  ",
        f"Machine: {results['machine']['cpu']}, {results['machine']['cores']} cores, "
        f"{results['machine']['memory_gib']} GiB; Python {results['machine']['python']}, numpy "
        f"{results['machine']['numpy']}; load average at start {results['machine']['load_average_at_start']} "
        "(shared machine).",
        "",
        "| what | seconds | records/s | x floor time | peak RSS MiB | dropped |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        f"| floor (orjson read + write every line) | {floor:.1f} | {rate(n, floor)} | 1.0 | "
        f"{results['floor']['peak_rss_mib']:.0f} | - |",
    ]
    steps = results["steps"]
    lines.append(f"| parse (JSONL -> Record, sorted) | {steps['parse']['seconds']:.1f} | "
                 f"{rate(n, steps['parse']['seconds'])} | {steps['parse']['seconds'] / floor:.1f} | "
                 f"{steps['parse']['rss_mib']:.0f} | - |")
    for name, step in steps["steps"].items():
        lines.append(f"| step {name} (alone, after parse) | {step['seconds']:.1f} | {rate(n, step['seconds'])} | "
                     f"{step['seconds'] / floor:.1f} | {step['rss_mib']:.0f} (cumulative) | {step['dropped']:,} |")
    for name, chain in results["chains"].items():
        lines.append(f"| `python -m distill`: {name}, end to end | {chain['wall_seconds']:.1f} | "
                     f"{rate(n, chain['wall_seconds'])} | {chain['wall_seconds'] / floor:.1f} | "
                     f"{chain['peak_rss_mib']:.0f} | - |")
    if "peer" in results:
        peer = results["peer"]
        lines.append(f"| datatrove MinHash (4 stages, 1 worker, reads its JSONL) | {peer['wall_seconds']:.1f} | "
                     f"{rate(n, peer['wall_seconds'])} | {peer['wall_seconds'] / floor:.1f} | "
                     f"{peer['peak_rss_mib']:.0f} | {peer['quality']['predicted']:,} |")
    lines += ["", "| quality (planted truth) | precision | recall | dropped | planted |", "| --- | ---: | ---: | ---: | ---: |"]
    rows = list(results["quality"].items())
    if "peer" in results:
        rows.append(("datatrove MinHash", results["peer"]["quality"]))
    for name, q in rows:
        lines.append(f"| {name} | {q['precision']:.4f} | {q['recall']:.4f} | {q['predicted']:,} | {q['truth']:,} |")
        if "outside_grey_zone" in q:
            g = q["outside_grey_zone"]
            lines.append(f"| {name}, pairs outside Jaccard {GREY_ZONE[0]}-{GREY_ZONE[1]} | {g['precision']:.4f} | "
                         f"{g['recall']:.4f} | {g['predicted']:,} | {g['truth']:,} |")
    near = results["quality"]["near_dedup (record)"]
    lines += [
        "",
        f"near_dedup pairwise check: {near['verified_precision']:.4f} of its drops have exact Jaccard >= {THRESHOLD} "
        "with the survivor they name.",
    ]
    if "peer" in results:
        ours = steps["steps"]["near_dedup (record)"]["seconds"]
        ours_with_parse = ours + steps["parse"]["seconds"]
        peer_seconds = results["peer"]["wall_seconds"]
        lines.append(f"Speed-up over datatrove: {peer_seconds / ours:.0f}x (step alone), "
                     f"{peer_seconds / ours_with_parse:.0f}x (parse + step, as datatrove reads its own input).")
    return "\n".join(lines) + "\n"


HEADER = """# Benchmark results

Produced by `bench/run.py` (see bench/README.md). Near-duplicate truth: planted exact copies plus planted near copies
whose exact word-5-gram Jaccard with their source is >= 0.8 (copies at lower similarity are planted too, as hard
negatives). Leak truth: records carrying a planted eval item (verbatim, truncated to 60-90%, or 1 word in 10 edited).
"x floor time" is seconds divided by the floor's seconds. Per-step RSS is the process peak after that step
(records parsed in memory included).

"""


def targets(runs: list[dict[str, Any]]) -> str:
    """The issue's targets against the largest run (the peer's rate from the run that measured it)."""
    largest = runs[-1]
    n, steps = largest["records"], largest["steps"]
    peer_run = next((run for run in reversed(runs) if "peer" in run), None)
    near_rate = n / steps["steps"]["near_dedup (record)"]["seconds"]
    near = largest["quality"]["near_dedup (record)"]
    decont = largest["quality"]["decontaminate (overlap)"]
    chain = largest["chains"]["default chain (sft)"]
    floor = largest["floor"]["seconds"]
    rows = []
    if peer_run is not None:
        peer_rate = peer_run["records"] / peer_run["peer"]["wall_seconds"]
        rows.append(("near_dedup >= 50x datatrove (records/s)",
                     f"{near_rate:,.0f} vs {peer_rate:,.0f} (datatrove at {peer_run['records']:,}) = "
                     f"{near_rate / peer_rate:.0f}x", near_rate / peer_rate >= 50))
    rows += [
        ("near_dedup recall >= 0.97", f"{near['recall']:.4f}", near["recall"] >= 0.97),
        ("near_dedup precision >= 0.99", f"{near['precision']:.4f} ({near['outside_grey_zone']['precision']:.4f} "
         f"outside Jaccard {GREY_ZONE[0]}-{GREY_ZONE[1]})", near["precision"] >= 0.99),
        ("decontaminate recall >= 0.99", f"{decont['recall']:.4f}", decont["recall"] >= 0.99),
        ("decontaminate precision >= 0.99", f"{decont['precision']:.4f}", decont["precision"] >= 0.99),
        ("default chain within 5x the floor", f"{chain['wall_seconds'] / floor:.1f}x", chain["wall_seconds"] <= 5 * floor),
        ("peak RSS < 2x input size", f"{chain['peak_rss_mib']:,.0f} MiB vs {largest['input_bytes'] / 2**20:,.0f} MiB "
         f"= {chain['peak_rss_mib'] * 2**20 / largest['input_bytes']:.1f}x", chain["peak_rss_mib"] * 2**20 < 2 * largest["input_bytes"]),
    ]
    lines = [f"## Targets, at {n:,} records", "", "| target | measured | met |", "| --- | --- | --- |"]
    lines += [f"| {what} | {measured} | {'yes' if met else '**no**'} |" for what, measured, met in rows]
    return "\n".join(lines) + "\n\n" + LIMITS + "\n"


LIMITS = """What limits it (py-spy / pyinstrument profiles of the 1e5 run):
- The default chain is bound by parsing, not by curation: `JsonlSource` -> pydantic `Record` (field map, timestamp
  parsing, validation) runs at ~25-40k records/s, 6-11x the floor on its own, and every record stays in memory as
  a pydantic object (~5 KiB each here, embedding lists included), which is why peak RSS is ~3x the input. Then the
  SFT task, schema validation of each output line and writing. Curation itself (exact_dedup) is ~2.5x the floor.
  The parse path and the runner are shared code being changed on other branches; they were left as they are.
- near_dedup: about half is hashing (normalising text, word hashes from a prefix hash over ~1 MB chunks, n-gram
  combination, one-permutation minima) and half is densification of short texts' empty slots (a ~60-word user
  turn fills ~50 of 256 slots), then LSH sorting. Its precision below 0.99 comes from planted copies whose true
  Jaccard is within ~0.03 of the 0.8 threshold: a 256-slot estimate has a standard deviation of ~0.025 there;
  outside that band precision and recall are >= 0.999.
- decontaminate (overlap) misses a few 25-word items edited 1 word in 10 where no run of 8 unedited words covers
  half the item: the 8-gram rule itself cannot see those.
- scrub_secrets is regex-bound (Python `re` scans every position); cheap substring guards skip most patterns.
"""


KEPT_SECTION = "## report.html"


def write_report() -> None:
    step_runs = [path for path in (BENCH / "results").glob("*.json") if path.stem.isdigit()]
    runs = [json.loads(path.read_text()) for path in sorted(step_runs, key=lambda p: int(p.stem))]
    sections = [targets(runs)] if runs else []
    sections += [render(run) for run in runs]
    from scale import render_scale  # the partitioned plan's own figures (bench/scale.py)

    sections.append(render_scale())
    # Sections other scripts measure by hand (bench/report.py's) are kept as they are.
    previous = (BENCH / "RESULTS.md").read_text() if (BENCH / "RESULTS.md").exists() else ""
    kept = previous[previous.index(KEPT_SECTION):] if KEPT_SECTION in previous else ""
    (BENCH / "RESULTS.md").write_text(HEADER + "\n".join(sections) + ("\n" + kept if kept else ""))


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        what, rest = sys.argv[2], sys.argv[3:]
        if what == "floor":
            result = child_floor(Path(rest[0]))
        elif what == "steps":
            result = child_steps(Path(rest[0]), rest[1:])
        else:
            result = child_peer(Path(rest[0]), Path(rest[1]))
        print(json.dumps(result))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, required=True)
    parser.add_argument("--peer", action="store_true", help="also run datatrove (slow: use at 1e5 records at most)")
    parser.add_argument("--data", type=Path, help="data directory (default bench/data/<records>)")
    parser.add_argument("--render-only", action="store_true")
    args = parser.parse_args()
    if not args.render_only:
        data = args.data or BENCH / "data" / str(args.records)
        results = run(args.records, args.peer, data)
        results["command"] = "python bench/run.py " + " ".join(sys.argv[1:])
        (BENCH / "results").mkdir(exist_ok=True)
        (BENCH / "results" / f"{args.records}.json").write_text(json.dumps(results, indent=1))
        print(render(results))
    write_report()


if __name__ == "__main__":
    main()
