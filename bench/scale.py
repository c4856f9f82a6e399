"""Benchmark of the partitioned plan at scale: the I/O floor (median of 3) against `python -m distill` end to end,
with the peak of the summed RSS of the whole process tree (driver and workers) and the peak disk use of the run
directory (spills included), sampled every 0.2 s from /proc. Not a test: results go to bench/results/scale-*.json
and, rendered, to bench/RESULTS.md.

    python bench/scale.py --records 1000000                      # generates bench/data/1000000 if missing
    python bench/scale.py --records 1000000 --copies 3           # 3e6 records: the corpus three times, new ids
    python bench/scale.py --records 1000000 --files 10 -- executor.compress_spills=true
                                # 1e7 records: ten zstd files, each the corpus with new ids, sessions and texts
    python bench/scale.py --records 1000000 --floor-only
    python bench/scale.py --records 100000 -- curation=thorough  # anything after -- is passed to distill
    python bench/scale.py --records 200000 --embedding-dims 768 -- curation=none ++curation.steps.semantic_dedup={}
                                # embeddings as wide as a real encoder's (bench/data/200000-768d)
    python bench/scale.py --records 1000000 --drop-caches          # as root: the page cache emptied before each run
    python bench/scale.py --records 1000000 --drop-caches --repeat 3  # floor and distill in turn, 3 times: the
                                # median ratio stands (this VM's speed drifts by 10-20% within an hour)

The page cache's state may move the result: a run writes ~3x its input into it (spills, then the files), the floor
nothing, and where the cache already fills the machine's memory every page written is one reclaimed first. At 1e6 on
the 2-core VM the same code took 18.0-22.0 s (4 runs, mean 20.7) with ~19.5 GB of cache left by other files, and
17.7-19.7 s (6 runs, mean 18.7) with the cache emptied and the input read back (bench/RESULTS.md, "The page cache's
share"). Each result records the memory free and cached when its run started and the machine's user and system CPU
seconds while it ran; `--drop-caches` (root only) empties the cache and reads the input back before every timed run,
floor included, so that runs compare under one state.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from run import machine, measure  # noqa: E402

PAGE = os.sysconf("SC_PAGE_SIZE")


def tree_stats(root: int) -> dict[int, list[str]]:
    """`/proc/PID/stat` fields (after the command name) of `root` and every descendant process, by pid."""
    children: dict[int, list[int]] = {}
    stats: dict[int, list[str]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        children.setdefault(int(fields[1]), []).append(int(entry.name))
        stats[int(entry.name)] = fields
    found, stack = {}, [root]
    while stack:
        pid = stack.pop()
        if pid in stats:
            found[pid] = stats[pid]
        stack.extend(children.get(pid, []))
    return found


def tree_rss(root: int) -> int:
    """Bytes resident in `root` and every descendant process, summed."""
    return sum(tree_rss_by_process(root).values())


def tree_rss_by_process(root: int) -> dict[int, int]:
    """Bytes resident in `root` and in each of its descendant processes, by pid."""
    return {pid: int(fields[21]) * PAGE for pid, fields in tree_stats(root).items()}


def process_name(pid: int, root: int) -> str:
    """"driver" for `root`; else the start of the process's command line (a fork server's workers show the server's)."""
    if pid == root:
        return "driver"
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()[:80]
    except OSError:
        return "(gone)"


def tree_pss(root: int) -> int:
    """Proportional set size of `root` and its descendants, summed: a page several processes map (Ray's object
    store, shared by every worker) counts once in total, not once per process as in `tree_rss`."""
    total = 0
    for pid in tree_stats(root):
        try:
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        match = re.search(r"^Pss:\s+(\d+) kB", rollup, re.MULTILINE)
        total += int(match.group(1)) * 1024 if match else 0
    return total


def disk_use(path: Path) -> int:
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_blocks * 512
            except OSError:
                pass
    return total


def memory_state() -> dict[str, float]:
    """MiB free and MiB in the page cache now, from /proc/meminfo."""
    fields = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    return {"free_mib": int(fields["MemFree"].split()[0]) / 1024, "cached_mib": int(fields["Cached"].split()[0]) / 1024}


def cpu_seconds() -> dict[str, float]:
    """The machine's user and system CPU seconds so far, all cores (/proc/stat)."""
    values = [int(field) for field in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    ticks = os.sysconf("SC_CLK_TCK")
    return {"user": (values[0] + values[1]) / ticks, "system": values[2] / ticks}


def settle_page_cache(inputs: list[Path]) -> None:
    """Empties the page cache (root only) and reads `inputs` back into it: the timed run reads its input from
    memory, as the floor does, and writes into free memory, not into memory the kernel must reclaim first."""
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")
    for path in inputs:
        with path.open("rb") as handle:
            while handle.read(8 << 20):
                pass


def run_sampled(command: list[str], sample: Any) -> tuple[str, str, float]:
    """Runs `command` from the repository, calling `sample(pid)` every 0.2 s while it runs: (stdout, stderr, wall
    seconds). A failed run ends the benchmark with its stderr."""
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def sampling() -> None:
        while process.poll() is None:
            sample(process.pid)
            time.sleep(0.2)

    sampler = threading.Thread(target=sampling, daemon=True)
    sampler.start()
    stdout, stderr = process.communicate()
    wall = time.perf_counter() - started
    sampler.join()
    if process.returncode != 0:
        raise SystemExit(f"bench: distill failed:\n{stderr[-3000:]}")
    return stdout, stderr, wall


def folder_floor(folder: Path) -> float:
    done = subprocess.run(
        [sys.executable, __file__, "--records", "0", "--child-floor-folder", str(folder)],
        check=True, capture_output=True, text=True,
    )
    return json.loads(done.stdout)["seconds"]


def run_distill(data: Path, extra: list[str], work: Path, settle: Any = lambda: None) -> dict[str, Any]:
    """One timed run; `settle()` first (the page cache emptied and the input read back, with --drop-caches)."""
    out = work / "run"
    command = [sys.executable, "-m", "distill", f"source.path={data}", f"hydra.run.dir={out}", *extra]
    peaks: dict[str, Any] = {"rss": 0, "disk": 0, "rss_at_seconds": None, "rss_by_process": []}
    settle()
    started = time.perf_counter()

    def sample(pid: int) -> None:
        by_process = tree_rss_by_process(pid)
        if sum(by_process.values()) > peaks["rss"]:
            # When the tree peaked and what each process held then: the phase log's times place it.
            peaks["rss"] = sum(by_process.values())
            peaks["rss_at_seconds"] = round(time.perf_counter() - started, 1)
            peaks["rss_at_clock"] = time.strftime("%H:%M:%S")  # the phase log's clock
            peaks["rss_by_process"] = [
                [process_name(child, pid), round(size / 2**20)]
                for child, size in sorted(by_process.items(), key=lambda item: -item[1])
            ]
        peaks["disk"] = max(peaks["disk"], disk_use(out) if out.exists() else 0)

    memory = memory_state()
    cpu_before = cpu_seconds()
    stdout, stderr, wall = run_sampled(command, sample)
    cpu = {kind: round(seconds - cpu_before[kind], 2) for kind, seconds in cpu_seconds().items()}
    manifest = json.loads((out / "manifest.json").read_text())
    decide = re.findall(r"decide (\S+): (\d+) keys, ([\d.]+) bytes per record", stderr)
    partitions = re.findall(r"plan: (\d+) shards, (\d+) partitions", stderr)
    phases = {phase: float(seconds) for phase, seconds in re.findall(r"\w+ (map|decide|reduce): ([\d.]+) s", stderr)}
    decide_rss = re.findall(r"decide: peak RSS of its process (\d+) MiB", stderr)
    driver_rss = re.findall(r"driver: peak RSS (\d+) MiB", stderr)
    worker_rss = {phase: float(mib) for phase, mib in re.findall(r"(map|reduce): peak RSS of a worker (\d+) MiB", stderr)}
    shutil.rmtree(out)
    return {
        "wall_seconds": wall,
        "memory_at_start": memory,
        "machine_cpu_seconds": cpu,
        "peak_tree_rss_mib": peaks["rss"] / 2**20,
        "peak_tree_rss_at_seconds": peaks["rss_at_seconds"],
        "peak_tree_rss_at_clock": peaks.get("rss_at_clock"),
        "peak_tree_rss_by_process_mib": peaks["rss_by_process"],
        "peak_disk_mib": peaks["disk"] / 2**20,
        "counts": manifest["counts"],
        "decide_bytes_per_record": {step: float(size) for step, _, size in decide},
        "plan": partitions[0] if partitions else None,
        "phase_seconds": phases,
        "decide_peak_rss_mib": float(decide_rss[0]) if decide_rss else None,
        "worker_peak_rss_mib": worker_rss,
        "driver_peak_rss_mib": float(driver_rss[0]) if driver_rss else None,
        "phase_log": [line for line in stderr.splitlines() if re.search(r"peak RSS|\w+ (map|decide|reduce):|plan:", line)],
        "summary": stdout.strip(),
    }


def copies_of(data: Path, copies: int, work: Path) -> Path:
    """The corpus `copies` times, each copy's ids and session ids prefixed so no id repeats (the texts do, so
    exact dedup drops the later copies: the memory and disk figures stay those of the full input)."""
    target = work / f"logs-x{copies}.jsonl"
    with target.open("wb") as out:
        for copy in range(copies):
            prefix = f"c{copy}".encode()
            with data.open("rb") as source:
                out.writelines(prefixed(line, {b'"id":"': prefix, b'"session_id":"': prefix}) for line in source)
    return target


def prefixed(line: bytes, prefixes: dict[bytes, bytes]) -> bytes:
    """The line with each key's string value prefixed (the generator writes compact JSON: `"key":"value"`)."""
    for key, prefix in prefixes.items():
        line = line.replace(key, key + prefix, 1)
    return line


def distinct_files(data: Path, files: int, work: Path) -> Path:
    """A folder of `files` zstd-compressed JSONL files, each the corpus with its ids, session ids and texts prefixed
    by the file's number: nothing repeats across files, so every file's records travel the whole chain as the
    corpus's do (compressed, so 1e7 records fit this machine's disk beside their outputs)."""
    import zstandard

    folder = work / f"distinct-x{files}"
    folder.mkdir()
    for copy in range(files):
        prefix = f"f{copy}".encode()
        with data.open("rb") as source, (folder / f"part-{copy:03d}.jsonl.zst").open("wb") as raw:
            with zstandard.ZstdCompressor(level=3).stream_writer(raw) as out:
                keys = {b'"id":"': prefix, b'"session_id":"': prefix, b'"text":"': prefix + b" "}
                for line in source:
                    out.write(prefixed(line, keys))
    return folder


def child_floor_folder(folder: Path) -> None:
    """The floor over a folder of compressed JSONL files: decompress, orjson-parse and serialise every line."""
    import orjson
    import zstandard

    started = time.perf_counter()
    rows = 0
    with open(os.devnull, "wb") as sink:
        for path in sorted(folder.glob("*.jsonl.zst")):
            with path.open("rb") as raw:
                for line in io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)):
                    sink.write(orjson.dumps(orjson.loads(line)) + b"\n")
                    rows += 1
    print(json.dumps({"seconds": time.perf_counter() - started, "rows": rows}))


def render_scale() -> str:
    """RESULTS.md's section for every bench/results/scale-*.json."""
    lines = [
        "\n## The partitioned plan at scale (`bench/scale.py`)\n",
        "Default chain, SFT task, `executor.workers=2`, default memory budget unless the overrides say otherwise. Peak RSS",
        "is the peak of the summed RSS of the whole process tree (driver, fork server, workers), sampled every 0.2 s;",
        "disk is the run directory's peak (spills included). The floor is the median of 3 runs in the same invocation.",
        "",
        "| records | input MiB | machine | command | floor s | distill s | x floor | peak RSS MiB | peak disk MiB | partitions | map / decide / reduce / rest s | decide bytes/record (held), decide process peak MiB |",
        "| ---: | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    results = [json.loads(path.read_text()) for path in sorted((REPO / "bench" / "results").glob("scale-*.json"))]
    for result in sorted(results, key=lambda r: r["records"]):
        run_ = result.get("distill")
        machine = result.get("machine") or {}
        where = result.get("where") or f"{machine.get('cpu', 'this machine')}, {machine.get('cores', 2)} cores"
        command = result.get("command", f"python bench/scale.py --records {result['records']}")
        if run_ is None:
            continue
        plan = run_.get("plan") or ["?", "?"]
        decided = ", ".join(f"{k} {v:.0f}" for k, v in run_.get("decide_bytes_per_record", {}).items()) or "-"
        if run_.get("decide_peak_rss_mib"):
            decided += f"; {run_['decide_peak_rss_mib']:.0f} MiB"
        phases = run_.get("phase_seconds") or {}
        if phases:
            rest = run_["wall_seconds"] - sum(phases.values())
            timing = " / ".join(f"{phases.get(p, 0):.1f}" for p in ("map", "decide", "reduce")) + f" / {rest:.1f}"
        else:
            timing = "-"
        ratio = f"{result['x_floor']:.1f}"
        if result.get("repeats"):  # the median repeat's, and the range over all of them
            ratios = [r["x_floor"] for r in result["repeats"]]
            ratio += f" ({min(ratios):.2f}-{max(ratios):.2f}, {len(ratios)} runs)"
        lines.append(
            f"| {result['records']:,} | {result['input_mib']:.0f}{' (zstd)' if 'zstd' in result.get('input', '') else ''} | {where} | `{command}` | {result['floor_seconds']:.1f} | "
            f"{run_['wall_seconds']:.1f} | {ratio} | {run_['peak_tree_rss_mib']:.0f} | "
            f"{run_['peak_disk_mib']:.0f} | {plan[1]} | {timing} | {decided} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, required=True)
    parser.add_argument("--copies", type=int, default=1)
    parser.add_argument("--files", type=int, default=0, help="N distinct zstd files of the corpus (see distinct_files)")
    parser.add_argument("--embedding-dims", type=int, default=None, help="embedding width of the corpus (default 32)")
    parser.add_argument("--child-floor-folder", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--floor-only", action="store_true")
    parser.add_argument("--drop-caches", action="store_true", help="empty the page cache before each timed run (root)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="measure the floor (3 runs) and distill this many times in turn; the median ratio stands")
    parser.add_argument("--work", type=Path, default=None, help="where copies and the run directory go")
    parser.add_argument("extra", nargs="*", help="distill overrides (after --)")
    args = parser.parse_args()
    if args.drop_caches and not os.access("/proc/sys/vm/drop_caches", os.W_OK):
        parser.error("--drop-caches needs root: it writes /proc/sys/vm/drop_caches")
    if args.child_floor_folder:
        child_floor_folder(args.child_floor_folder)
        return
    wide = [] if args.embedding_dims is None else ["--embedding-dims", str(args.embedding_dims)]
    data_dir = REPO / "bench" / "data" / (str(args.records) + (f"-{args.embedding_dims}d" if wide else ""))
    if not (data_dir / "logs.jsonl").exists():
        subprocess.run([sys.executable, str(REPO / "bench" / "generate.py"), "--records", str(args.records),
                        "--out", str(data_dir), *wide], check=True)
    work = Path(tempfile.mkdtemp(prefix="distill-scale-", dir=args.work))
    try:
        if args.files:
            data = distinct_files(data_dir / "logs.jsonl", args.files, work)
            inputs = sorted(data.iterdir())
            floor_once = lambda: folder_floor(data)  # noqa: E731
            input_bytes = sum(path.stat().st_size for path in data.iterdir())
        else:
            data = data_dir / "logs.jsonl" if args.copies == 1 else copies_of(data_dir / "logs.jsonl", args.copies, work)
            floor_data = data.parent if args.copies == 1 else work
            if args.copies > 1:
                (work / "logs.jsonl").unlink(missing_ok=True)
                os.link(data, work / "logs.jsonl")
            inputs = [data]
            floor_once = lambda: measure(["--child", "floor", str(floor_data)])["seconds"]  # noqa: E731
            input_bytes = data.stat().st_size
        result: dict[str, Any] = {
            "records": args.records * max(args.copies, args.files),
            "input_mib": input_bytes / 2**20,
            "input": f"{args.files} zstd files" if args.files else "JSONL",
            "machine": machine(),
            "overrides": args.extra,
            "page_cache": "emptied and the input read back before each timed run" if args.drop_caches else "as found",
        }
        settle = (lambda: settle_page_cache(inputs)) if args.drop_caches else (lambda: None)
        repeats = []
        for _ in range(1 if args.floor_only else args.repeat):
            floors = []
            for _ in range(3):
                settle()
                floors.append(floor_once())
            repeat: dict[str, Any] = {"floor_seconds": statistics.median(floors), "floor_runs": floors}
            if not args.floor_only:
                repeat["distill"] = run_distill(data, args.extra, work, settle)
                repeat["x_floor"] = repeat["distill"]["wall_seconds"] / repeat["floor_seconds"]
            repeats.append(repeat)
        # The repeat with the median ratio stands for the invocation (with an even count, the upper of the two).
        chosen = sorted(repeats, key=lambda r: r.get("x_floor", 0))[len(repeats) // 2]
        result.update(chosen)
        if len(repeats) > 1:
            result["repeats"] = [
                {"floor_seconds": r["floor_seconds"], "wall_seconds": r["distill"]["wall_seconds"], "x_floor": r["x_floor"]}
                for r in repeats
            ]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    name = f"scale-{args.records * max(args.copies, args.files)}{f'-{args.embedding_dims}d' if wide else ''}{'-' + '-'.join(args.extra).replace('=', '_').replace('/', '_') if args.extra else ''}"
    result["command"] = " ".join(["python bench/scale.py", *sys.argv[1:]])
    (REPO / "bench" / "results" / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    from run import write_report

    write_report()
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2))


if __name__ == "__main__":
    main()
