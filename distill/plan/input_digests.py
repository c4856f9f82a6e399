"""The manifest's sha256 of each input file the plan cut into byte ranges, taken on a thread of the lowest priority
from the map's start.

The plan itself only needs a fast hash of each input (`file_content_hash`, for the resume key) before the map can
start. The sha256 the manifest promises costs ~1 s of CPU per 1.7 GB; taken while cutting the file, it held up the
map. At the lowest priority (nice 19, the thread's own on Linux) it takes only what the workers leave: the map's
tail, where a worker waits for the last shard, and the core the decide leaves idle. Started with the decide at the
normal priority, what it had left came out of the reduce's workers: 1e6 bench runs took 17.83 s against 18.12
(means of three alternating pairs, bench/RESULTS.md). Where a thread cannot be given its own priority, it waits for
the map to end (`map_done`), so as not to compete with it.
"""

from __future__ import annotations

import hashlib
import os
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from distill.errors import DistillError
from distill.hashing import HASH_CHUNK_BYTES, ContentHash
from distill.output.files import shown_path
from distill.sources.base import Shard


LOWEST_PRIORITY = 19
"""The nice value the hashing thread takes: it runs only where no other thread of the machine wants the core."""


def lowest_priority_for_this_thread() -> bool:
    """Gives the calling thread the lowest priority: Linux gives each thread a nice value of its own (elsewhere the
    call would name the whole process). False where the thread keeps its priority."""
    if sys.platform != "linux":
        return False
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), LOWEST_PRIORITY)
    except OSError:
        return False
    return True


class InputDigests:
    """sha256 of the files whose shards were cut (`Shard.content_hash` set, no `sha256`), for the map results'
    input entries, which leave it None. Each file is read once more for it, and its content hash taken again on the
    way: a file that changed since the cut (a log still being appended to) stops the run, before any output is
    final."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[Path, str | None]] = {}
        self.digests: dict[str, str] = {}
        self.error: str | None = None
        self.stopped = threading.Event()
        self.mapped = threading.Event()
        # A daemon thread, stopped between chunks: a run that fails meanwhile does not wait for a whole file's hash.
        self.thread = threading.Thread(target=self._hash_all, name="distill-input-sha256", daemon=True)

    def start(self, shards: Sequence[Shard]) -> None:
        """Starts hashing the cut files of `shards` on a thread that yields to every other (see the module)."""
        self.files = {
            shown_path(Path(shard.path).resolve()): (Path(shard.path), shard.content_hash)
            for shard in shards
            if shard.path is not None and shard.content_hash is not None and shard.sha256 is None
        }
        if self.files:
            self.thread.start()

    def map_done(self) -> None:
        """The map has read the inputs: a thread that could not lower its priority may hash them now."""
        self.mapped.set()

    def _hash_all(self) -> None:
        name = ""
        if not lowest_priority_for_this_thread():
            self.mapped.wait()  # at the normal priority it would compete with the map's workers
        try:
            for name, (path, content_hash) in self.files.items():
                digest = hashlib.sha256()
                with path.open("rb") as handle:
                    check = ContentHash(os.fstat(handle.fileno()).st_size)
                    while chunk := handle.read(HASH_CHUNK_BYTES):
                        if self.stopped.is_set():
                            return
                        digest.update(chunk)  # hashlib lets go of the GIL for large chunks
                        check.update(chunk)
                if check.hexdigest() != content_hash:
                    self.error = f"source.path: {name} changed while the run read it; run again once it is written"
                    return
                self.digests[name] = digest.hexdigest()
        except OSError as error:  # the map read it a moment ago: gone since
            self.error = f"source.path: cannot read {name} again for its sha256 ({error.strerror or error})"
        except BaseException as error:  # noqa: BLE001 - any failure here is the run's, said by `wait`
            self.error = f"source.path: hashing {name} failed ({type(error).__name__}: {error})"

    def wait(self) -> None:
        """Waits for the hashes: raises the one-line error of a file that could not be hashed or changed. Called
        before the merge gives any output its final name."""
        self.mapped.set()  # whoever waits is past the map
        if self.thread.ident is not None:
            self.thread.join()
        if self.error is None and self.digests.keys() != self.files.keys():
            self.error = "source.path: the inputs' sha256 were not taken"  # never started: `start` was not called
        if self.error is not None:
            raise DistillError(self.error)

    def fill(self, inputs: list[dict[str, Any]]) -> None:
        """Puts each file's sha256 into the input entries that lack one (after `wait`)."""
        for entry in inputs:
            if entry.get("sha256") is None and entry.get("path") in self.digests:
                entry["sha256"] = self.digests[entry["path"]]

    def __enter__(self) -> InputDigests:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stopped.set()  # a failed run does not wait for the rest of a file's hash
        self.mapped.set()  # nor for a map that will not end
