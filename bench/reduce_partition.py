"""Benchmark: the CPU seconds of one reduce partition, repeated, to compare changes to the reduce.

A whole run's time moves by a few percent from one run to the next on a shared VM, more than most changes to the
reduce are worth. This times one partition's reduce alone, in this process, many times over the same spills: a run
of the bench corpus killed after its first reduce partition (`DISTILL_TEST_KILL_AFTER=reduce:1`, one worker) leaves
the spills of the others. Each round reduces partition 1 of a fresh copy of them and reports the CPU seconds
(`time.process_time`), which steal time on the VM does not inflate as it does wall time.

    python bench/reduce_partition.py --records 100000 --rounds 7

To compare two checkouts, run it in each in turn (same --work, so both reduce the same spills) and compare medians:

    for i in 1 2 3; do (cd A && python bench/reduce_partition.py); (cd B && python bench/reduce_partition.py); done
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # this checkout's distill, whichever one is installed
PARTITION = 1


def killed_run(records: int, work: Path) -> Path:
    """A run of the bench corpus stopped after its first reduce partition (made once per --work)."""
    run = work / f"killed-{records}"
    if (run / ".distill-work" / "plan.json").exists():
        return run
    data = REPO / "bench" / "data" / str(records) / "logs.jsonl"
    if not data.exists():
        subprocess.run([sys.executable, str(REPO / "bench" / "generate.py"), "--records", str(records),
                        "--out", str(data.parent)], check=True)
    shutil.rmtree(run, ignore_errors=True)
    env = {**os.environ, "DISTILL_TEST_KILL_AFTER": "reduce:1"}
    # Its own session: the hook kills the run's whole process group.
    subprocess.run(
        [sys.executable, "-m", "distill", f"source.path={data}", f"hydra.run.dir={run}", "executor.workers=1"],
        env={**env, "PYTHONPATH": str(REPO)}, cwd=REPO, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    if not (run / ".distill-work" / "plan.json").exists():
        raise SystemExit(f"bench: the run to reduce from did not start ({run})")
    return run


def reduce_once(run: Path, scratch: Path) -> tuple[float, int]:
    """(CPU seconds, records) of partition 1's reduce over a fresh copy of `run`."""
    from omegaconf import OmegaConf

    from distill.collector import cyclic_gc_paused
    from distill.config import build_settings
    from distill.output.writers import dataset_writer
    from distill.plan.context import Layout, PlanContext
    from distill.plan.reduce import reduce_partition

    shutil.rmtree(scratch, ignore_errors=True)
    shutil.copytree(run, scratch, symlinks=True)
    config = OmegaConf.to_container(OmegaConf.load(scratch / ".hydra" / "config.yaml"), resolve=True)
    plan = json.loads((scratch / ".distill-work" / "plan.json").read_text())
    settings = build_settings(config)
    layout = Layout.of(scratch)
    ctx = PlanContext(settings, layout, plan["partitions"], settings.executor.compress_spills, config, plan["shards"])
    ctx.setup()
    writer = dataset_writer(settings.task, scratch, layout, settings.output_format, ctx.compress, settings.flavour_output)
    with cyclic_gc_paused():
        started = time.process_time()
        result = reduce_partition(ctx, PARTITION, list(range(plan["shards"])), writer)
        return time.process_time() - started, result.records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--work", type=Path, default=Path("/tmp/distill-bench-reduce"))
    args = parser.parse_args()
    from distill.collector import keep_freed_memory

    keep_freed_memory()  # as a pool worker does
    run = killed_run(args.records, args.work)
    seconds = []
    records = 0
    for _ in range(args.rounds):
        spent, records = reduce_once(run, args.work / "scratch")
        seconds.append(spent)
    shutil.rmtree(args.work / "scratch", ignore_errors=True)
    print(json.dumps({
        "checkout": str(REPO), "records": records, "cpu_seconds": [round(s, 4) for s in seconds],
        "median": round(statistics.median(seconds), 4), "min": round(min(seconds), 4),
    }))


if __name__ == "__main__":
    main()
