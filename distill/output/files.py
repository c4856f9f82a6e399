"""Output files: JSONL with sorted keys (or Parquet with a schema-derived layout), written atomically (a temporary
file unique to the process, then rename), hashed as written; and the run directory they go to, which belongs to one
run at a time (a lock on the directory) and is never silently mixed with an earlier run's outputs.

Every temporary file is `.<name>.<pid>.<random>.tmp` beside its final file and is removed on every exit path
(errors, Ctrl-C); only a SIGKILL leaves one behind, and the next run that claims the directory removes it.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import secrets
import shutil
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import orjson

from distill.errors import DistillError
from distill.hashing import file_sha256

JSON_OPTIONS = orjson.OPT_SORT_KEYS
PARQUET_ROW_GROUP_ROWS = 65_536
TEMPORARY_SUFFIX = ".tmp"
MAX_NESTING = 200
"""The deepest nesting a value may have to be written: orjson stops at 255 levels, and a value is written inside
a few levels of its own (a quarantine row holds the record, which holds metadata)."""
# Entries of a run directory that are no run's outputs: Hydra's record of the run (and its log, `*.log`).
_RUN_DIRECTORY_OWN = (".hydra",)
# What distill itself writes at the top of a run directory besides the files its manifest lists; `.distill-work`
# is the plan's working directory (distill.plan.context.WORK_DIR), left by an interrupted run for `resume=true`.
_DISTILL_NAMES = ("manifest.json", "stats.json", "quarantine.jsonl", "coverage", ".distill-work")
_DATASET_SUFFIXES = (".jsonl", ".parquet")


class OutputError(DistillError):
    """A file of the run could not be written (disk full, permissions, a bad directory)."""


def _why(error: OSError) -> str:
    return error.strerror or str(error)


def cannot_write(path: Path, error: OSError) -> OutputError:
    """The one-line error of a file that could not be written."""
    return OutputError(f"cannot write {shown_path(path)}: {_why(error)}")


def shown_path(path: Path | str) -> str:
    """A path as printable UTF-8 text: bytes that are not UTF-8 (a file name from another encoding) are
    percent-encoded (`bad-\\xff.jsonl` -> `bad-%FF.jsonl`), so origins, ids and messages can always be written."""
    text = os.fspath(path)
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        # os.fsdecode keeps an undecodable byte B as the lone surrogate U+DC00+B.
        escaped = "".join(f"%{ord(c) - 0xDC00:02X}" if 0xDC80 <= ord(c) <= 0xDCFF else c for c in text)
        return escaped.encode("utf-8", errors="backslashreplace").decode("utf-8")


# --- values a writer can hold ---------------------------------------------------------------------------------


def nesting_depth_exceeds(value: Any, limit: int = MAX_NESTING) -> bool:
    """Whether dicts/lists nest deeper than `limit` levels (iterative: no recursion limit to hit)."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        for child in node.values() if isinstance(node, dict) else node:
            if isinstance(child, (dict, list)):
                stack.append((child, depth + 1))
    return False


def unwritable(value: Any) -> str | None:
    """Why `value` cannot be written as JSON (nesting deeper than MAX_NESTING levels, an integer beyond 64 bits,
    text that is not UTF-8), or None. Fast path: orjson itself, with the value wrapped in the levels of headroom a
    writer needs, so only a failing value is walked in Python."""
    wrapped: Any = value
    for _ in range(255 - MAX_NESTING - 1):
        wrapped = [wrapped]
    try:
        orjson.dumps(wrapped)
        return None
    except orjson.JSONEncodeError as error:
        if isinstance(value, (dict, list)) and nesting_depth_exceeds(value):
            return f"nested deeper than {MAX_NESTING} levels"
        return str(error)


def json_ready(value: Any, depth: int = 0) -> Any:
    """A copy of `value` any writer can hold: nesting cut at MAX_NESTING levels (the rest as a marker string),
    integers beyond 64 bits as text, text that is not UTF-8 with the bad code points escaped. For quarantine rows,
    whose `record` is whatever the input held."""
    if isinstance(value, dict):
        if depth >= MAX_NESTING:
            return f"(nested deeper than {MAX_NESTING} levels)"
        return {json_ready(key, depth) if isinstance(key, str) else str(key): json_ready(item, depth + 1)
                for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        if depth >= MAX_NESTING:
            return f"(nested deeper than {MAX_NESTING} levels)"
        return [json_ready(item, depth + 1) for item in value]
    if isinstance(value, bool) or value is None or isinstance(value, float):
        return value
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**64 else str(value)
    if isinstance(value, str):
        try:
            value.encode("utf-8")
            return value
        except UnicodeEncodeError:
            return value.encode("utf-8", errors="backslashreplace").decode("utf-8")
    try:
        orjson.dumps(value)
        return value
    except orjson.JSONEncodeError:
        return str(value)


# --- atomic files -----------------------------------------------------------------------------------------------


def temporary_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}{TEMPORARY_SUFFIX}")


def is_temporary(name: str) -> bool:
    return name.startswith(".") and name.endswith(TEMPORARY_SUFFIX)


@contextmanager
def atomic_file(path: Path) -> Iterator[IO[bytes]]:
    """A binary handle on a temporary file (`temporary_path`) that becomes `path` only when the block ends without
    an error. The temporary file is removed on every exit path (an error, Ctrl-C); an OSError (disk full,
    permissions) becomes a one-line OutputError naming the file."""
    temporary = temporary_path(path)
    try:
        with temporary.open("wb") as handle:
            yield handle
        os.replace(temporary, path)
    except OSError as error:
        raise cannot_write(path, error) from None
    finally:
        try:
            temporary.unlink(missing_ok=True)
        except OSError:
            pass


def jsonl_bytes(row: Any) -> bytes:
    return orjson.dumps(row, option=JSON_OPTIONS | orjson.OPT_APPEND_NEWLINE)


def write_jsonl(path: Path, rows: Iterable[Any]) -> dict[str, Any]:
    """Writes one JSON object per line (a row given as bytes is an already encoded line); returns {path, sha256,
    rows} for the manifest."""
    count = 0
    # Lines are hashed and written a block at a time: one sha256 update and one write call per ~1 MiB, not per
    # line (208,000 lines of 5.6 KB, 1.2 GB: 2.3-2.8 -> 2.0 s).
    block: list[bytes] = []
    block_bytes = 0
    with atomic_file(path) as handle, HashedBlocks(handle) as blocks:
        for row in rows:
            try:
                data = row if isinstance(row, bytes) else jsonl_bytes(row)
            except orjson.JSONEncodeError as error:
                raise OutputError(f"cannot write {shown_path(path)}: row {count + 1}: {error}") from None
            block.append(data)
            block_bytes += len(data)
            count += 1
            if block_bytes >= WRITE_BLOCK_BYTES:
                blocks.write(block)
                block, block_bytes = [], 0
        blocks.write(block)
    return {"path": path.name, "sha256": blocks.hexdigest(), "rows": count}


WRITE_BLOCK_BYTES = 512 << 10
"""How much of a file is joined, written and hashed at a time: within a core's L2 cache. The merge of a killed 1e6
run's outputs (the run resumed after its reduce) took 4.71 s in 512 KiB blocks against 5.12 in 1 MiB, the kernel's
share 1.5-2.1 s against 2.1-2.8 (bench/RESULTS.md)."""


class HashedBlocks:
    """A file's blocks written in order and hashed on a thread of their own from the second block on (hashlib lets
    go of the GIL), so the sha256 of a large file runs beside its writing and the making of its next block instead
    of after each: the 1e6 bench's train file, 1.1 GB, merged alone in 1.09-1.25 s against 1.51-1.56
    (bench/RESULTS.md). A file of one block is hashed in the caller's thread. `digest`: the hash of what the file
    already holds, when the blocks go on a file a merge resumes."""

    def __init__(self, handle: IO[bytes], digest: Any = None) -> None:
        self.handle = handle
        self.digest = digest if digest is not None else hashlib.sha256()
        self.hasher: ThreadPoolExecutor | None = None
        self.hashed: Future[None] | None = None
        self.blocks = 0

    def write(self, lines: list[Any]) -> None:
        """Writes the lines (bytes, or `memoryview`s of them) as one block."""
        data = b"".join(lines)
        self.blocks += 1
        if self.blocks == 1:
            self.digest.update(data)
        else:
            if self.hasher is None:
                self.hasher = ThreadPoolExecutor(1, thread_name_prefix="distill-output-sha256")
            if self.hashed is not None:
                self.hashed.result()  # one block in flight: the blocks go into the hash in order
            self.hashed = self.hasher.submit(self.digest.update, data)
        self.handle.write(data)

    def hexdigest(self) -> str:
        return self.digest.hexdigest()

    def __enter__(self) -> HashedBlocks:
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.hasher is not None:
            if self.hashed is not None:
                self.hashed.result()
            self.hasher.shutdown()


def write_bytes(path: Path, data: bytes) -> dict[str, Any]:
    with atomic_file(path) as handle:
        handle.write(data)
    return {"path": path.name, "sha256": hashlib.sha256(data).hexdigest()}


def write_json(path: Path, value: Any) -> dict[str, Any]:
    try:
        data = orjson.dumps(value, option=JSON_OPTIONS | orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)
    except orjson.JSONEncodeError as error:
        raise OutputError(f"cannot write {shown_path(path)}: {error}") from None
    return write_bytes(path, data)


def write_text(path: Path, text: str) -> dict[str, Any]:
    return write_bytes(path, text.encode("utf-8"))


def write_parquet(path: Path, lines: Iterable[dict[str, Any]], schema_name: str) -> dict[str, Any]:
    """Writes the lines as Parquet rows, in order, in row groups of `PARQUET_ROW_GROUP_ROWS`, with the Arrow schema
    derived from JSON Schema `schema_name` (see `distill.output.parquet_schema`); returns {path, sha256, rows}.
    Same lines, same bytes; never more than one row group in memory."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from distill.output.parquet_schema import table_layout
    from distill.validation import load_schema

    layout = table_layout(load_schema(schema_name), schema_name, pa)
    count = 0
    with atomic_file(path) as handle:
        with pq.ParquetWriter(handle, layout.arrow_schema, compression="zstd") as writer:
            group: list[dict[str, Any]] = []
            for line in lines:
                group.append(layout.row(line))
                if len(group) == PARQUET_ROW_GROUP_ROWS:
                    writer.write_table(pa.Table.from_pylist(group, schema=layout.arrow_schema))
                    count += len(group)
                    group = []
            if group or count == 0:
                writer.write_table(pa.Table.from_pylist(group, schema=layout.arrow_schema))
                count += len(group)
    return {"path": path.name, "sha256": file_sha256(path), "rows": count}


# --- the run directory ------------------------------------------------------------------------------------------

_claimed: dict[str, int] = {}
"""Run directories this process holds: resolved path -> the open lock file (released when the process exits)."""


def remove_temporaries(directory: Path) -> list[str]:
    """Removes every distill temporary file under `directory` (left by a killed run); returns their names."""
    removed = []
    for root, _dirs, names in os.walk(directory):
        for name in names:
            if is_temporary(name):
                try:
                    os.unlink(os.path.join(root, name))
                    removed.append(name)
                except OSError:
                    pass
    return removed


def release_run_directories() -> None:
    """For an interrupted run: removes the temporary files left in every run directory this process holds (a
    worker stopped by a signal cannot remove its own), then lets the directories go."""
    for directory in list(_claimed):
        remove_temporaries(Path(directory))
        os.close(_claimed.pop(directory))


def _lock(directory: Path, key: str) -> None:
    """An exclusive flock on the directory itself (no lock file to clutter it): the kernel drops it when the
    process ends, however it ends, so a killed run never leaves a stale lock."""
    resolved = str(directory.resolve())
    if resolved in _claimed:
        return
    if not os.access(directory, os.W_OK | os.X_OK):
        problem = "read-only file system" if _read_only_mount(directory) else "Permission denied"
        raise OutputError(f"{key}: {shown_path(directory)} is not writable ({problem})")
    descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        os.close(descriptor)
        if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise OutputError(
                f"{key}: {shown_path(directory)} is in use by another distill run; choose another directory"
            ) from None
        raise OutputError(f"{key}: cannot lock {shown_path(directory)}: {_why(error)}") from None
    _claimed[resolved] = descriptor


def _read_only_mount(directory: Path) -> bool:
    try:
        return bool(os.statvfs(directory).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _earlier_outputs(directory: Path) -> list[str]:
    return sorted(
        entry.name for entry in directory.iterdir()
        if entry.name not in _RUN_DIRECTORY_OWN and not entry.name.endswith(".log") and not is_temporary(entry.name)
    )


def _distill_outputs(directory: Path, names: list[str]) -> set[str]:
    """Which of `names` an earlier distill run wrote: what its manifest lists, plus the files every run writes and
    dataset files (`*.jsonl`, `*.parquet`) of a run that was stopped before its manifest."""
    listed = set(_DISTILL_NAMES)
    try:
        manifest = orjson.loads((directory / "manifest.json").read_bytes())
        listed.update(str(entry["path"]).split("/")[0] for entry in manifest.get("outputs", []))
    except (OSError, orjson.JSONDecodeError, AttributeError, KeyError, TypeError):
        pass
    return {name for name in names if name in listed or (name.endswith(_DATASET_SUFFIXES) and (directory / name).is_file())}


def claim_run_directory(directory: Path, *, overwrite: bool = False, resume: bool = False,
                        key: str = "hydra.run.dir") -> None:
    """Makes `directory` this run's: creates it, takes its lock (a second run into it is refused while this process
    lives), removes temporary files a killed run left, and refuses a directory holding an earlier run's outputs
    unless `overwrite` (they are removed first, so no stale file lies beside the new ones outside the manifest) or
    `resume` (they are kept for the run to pick up). Claiming a directory this process holds again checks again and
    is otherwise a no-op. Raises OutputError with a one-line message naming `key`."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocking = next((p for p in (directory, *directory.parents) if p.exists() and not p.is_dir()), directory)
        raise OutputError(f"{key}: {shown_path(blocking)} exists and is not a directory") from None
    except OSError as error:
        raise OutputError(f"{key}: cannot create {shown_path(directory)}: {_why(error)}") from None
    _lock(directory, key)
    remove_temporaries(directory)
    earlier = _earlier_outputs(directory)
    if not earlier or resume:
        return
    shown = ", ".join(earlier[:5]) + (", ..." if len(earlier) > 5 else "")
    if not overwrite:
        interrupted = "an interrupted run's work: pass resume=true to finish it, " if ".distill-work" in earlier else ""
        raise OutputError(
            f"{key}: {shown_path(directory)} already holds an earlier run's outputs ({shown}); "
            f"{interrupted}choose another directory or pass overwrite=true to replace them"
        )
    foreign = sorted(set(earlier) - _distill_outputs(directory, earlier))
    if foreign:
        raise OutputError(
            f"{key}: {shown_path(directory)} holds files distill did not write ({', '.join(foreign[:5])}); "
            "overwrite=true only replaces a distill run's outputs: choose another directory"
        )
    for name in earlier:
        target = directory / name
        try:
            shutil.rmtree(target) if target.is_dir() and not target.is_symlink() else target.unlink()
        except OSError as error:
            raise OutputError(f"{key}: cannot remove the earlier {shown_path(target)}: {_why(error)}") from None
