"""executor=ray (a local Ray) against executor=local on the same corpus and machine: wall seconds, x the I/O floor
(median of 3), the peak RSS of the driver alone and of its whole process tree (Ray's GCS, raylet and workers are
the driver's descendants), each phase's wall and task seconds, and whether the data files are the same bytes.
Not a test: results go to bench/results/ray-*.json and, rendered, to bench/README.md.

    python bench/ray_compare.py --records 100000 -- executor.partitions=4        # generates bench/data/100000
    python bench/ray_compare.py --records 100000 --name thorough -- executor.partitions=4 curation=thorough
        '++curation.steps.decontaminate.eval_sets=[bench/data/100000/evals/heldout.jsonl]'      (one line)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from run import machine, measure  # noqa: E402
from scale import run_sampled, tree_pss, tree_rss, tree_stats  # noqa: E402

DATA_FILES = (".jsonl", ".parquet", "stats.json")
PHASE = re.compile(r"(?:local|ray) (map|decide|reduce): ([\d.]+) s(?:, ([\d.]+) task-seconds, (\d+) rows)?")


def driver_peak(pid: int) -> int:
    """The driver's own peak resident bytes so far (VmHWM)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    match = re.search(r"VmHWM:\s+(\d+) kB", status)
    return int(match.group(1)) * 1024 if match else 0


TICKS = os.sysconf("SC_CLK_TCK")


def tree_cpu(root: int, seen: dict[int, float]) -> None:
    """Updates `seen` (pid -> CPU seconds, user + system) for `root` and its descendants: summed at the end, it
    is the CPU the whole tree used (a process counts with its last sample), which contention does not inflate."""
    for pid, fields in tree_stats(root).items():
        seen[pid] = max(seen.get(pid, 0.0), (int(fields[11]) + int(fields[12])) / TICKS)


def run_once(data: Path, executor: list[str], extra: list[str], work: Path) -> dict[str, Any]:
    out = work / "run"
    command = [sys.executable, "-m", "distill", f"source.path={data}", f"hydra.run.dir={out}", *executor, *extra]
    peaks = {"tree": 0, "driver": 0, "pss": 0}
    cpu: dict[int, float] = {}

    def sample(pid: int) -> None:
        peaks["tree"] = max(peaks["tree"], tree_rss(pid))
        peaks["pss"] = max(peaks["pss"], tree_pss(pid))
        peaks["driver"] = max(peaks["driver"], driver_peak(pid))
        tree_cpu(pid, cpu)

    _, stderr, wall = run_sampled(command, sample)
    manifest = json.loads((out / "manifest.json").read_text())
    shutil.rmtree(out)
    phases = {
        phase: {"wall_seconds": float(w), **({"task_seconds": float(t), "rows": int(r)} if t else {})}
        for phase, w, t, r in PHASE.findall(stderr)
    }
    return {
        "wall_seconds": wall,
        "peak_driver_rss_mib": peaks["driver"] / 2**20,
        "peak_tree_rss_mib": peaks["tree"] / 2**20,
        "peak_tree_pss_mib": peaks["pss"] / 2**20,
        "tree_cpu_seconds": sum(cpu.values()),
        "phases": phases,
        "executor": manifest["executor"],
        "outputs": {entry["path"]: entry["sha256"] for entry in manifest["outputs"] if entry["path"].endswith(DATA_FILES)},
        "counts": manifest["counts"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, required=True)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--data", type=Path, default=None, help="a generated corpus directory (default bench/data/N)")
    parser.add_argument("--name", default="default", help="results go to bench/results/ray-RECORDS-NAME.json")
    parser.add_argument("extra", nargs="*", help="distill overrides (after --)")
    args = parser.parse_args()
    data_dir = args.data or REPO / "bench" / "data" / str(args.records)
    if not (data_dir / "logs.jsonl").exists():
        subprocess.run([sys.executable, str(REPO / "bench" / "generate.py"), "--records", str(args.records),
                        "--out", str(data_dir)], check=True)
    work = Path(tempfile.mkdtemp(prefix="distill-ray-"))
    try:
        floors = [measure(["--child", "floor", str(data_dir)])["seconds"] for _ in range(3)]
        floor = statistics.median(floors)
        result: dict[str, Any] = {
            "records": args.records, "input_mib": (data_dir / "logs.jsonl").stat().st_size / 2**20,
            "machine": machine(), "floor_seconds": floor, "floor_runs": floors, "overrides": args.extra,
        }
        for kind in ("local", "ray"):
            run = run_once(data_dir / "logs.jsonl", [f"executor={kind}", f"executor.workers={args.workers}"],
                           args.extra, work)
            run["x_floor"] = run["wall_seconds"] / floor
            result[kind] = run
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result["same_bytes"] = result["local"]["outputs"] == result["ray"]["outputs"]
    (REPO / "bench" / "results" / f"ray-{args.records}-{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2))


if __name__ == "__main__":
    main()
