"""The manifest's sha256 of each input file the plan cut into byte ranges, taken on a thread while the decide runs.

The plan itself only needs a fast hash of each input (`file_content_hash`, for the resume key) before the map can
start. The sha256 the manifest promises costs ~1 s of CPU per 1.7 GB; taken while cutting the file, it held up the
map. Started once the map is done, it runs beside the decide, which leaves one core idle (bench/RESULTS.md).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from distill.errors import DistillError
from distill.output.files import shown_path
from distill.sources.base import Shard

CHUNK_BYTES = 8 << 20


class InputDigests:
    """sha256 of the files whose shards were cut (`Shard.content_hash` set, no `sha256`), for the map results'
    input entries, which leave it None."""

    def __init__(self, shards: Sequence[Shard]) -> None:
        self.paths = {
            shown_path(Path(shard.path).resolve()): Path(shard.path)
            for shard in shards
            if shard.path is not None and shard.content_hash is not None and shard.sha256 is None
        }
        self.digests: dict[str, str] = {}
        self.error: str | None = None
        self.stopped = threading.Event()
        # A daemon thread, stopped between chunks: a run that fails meanwhile does not wait for a whole file's hash.
        self.thread = threading.Thread(target=self._hash_all, name="distill-input-sha256", daemon=True)

    def start(self) -> None:
        if self.paths:
            self.thread.start()

    def _hash_all(self) -> None:
        try:
            for name, path in self.paths.items():
                digest = hashlib.sha256()
                with path.open("rb") as handle:
                    while chunk := handle.read(CHUNK_BYTES):
                        if self.stopped.is_set():
                            return
                        digest.update(chunk)  # hashlib lets go of the GIL for large chunks
                self.digests[name] = digest.hexdigest()
        except OSError as error:  # the map read it a moment ago: gone or changed since
            self.error = f"source.path: cannot read {name} again for its sha256 ({error.strerror or error})"

    def fill(self, inputs: list[dict[str, Any]]) -> None:
        """Waits for the hashes and puts each into the input entries that lack one."""
        if self.thread.ident is not None:
            self.thread.join()
        if self.error is not None:
            raise DistillError(self.error)
        for entry in inputs:
            if entry.get("sha256") is None and entry.get("path") in self.digests:
                entry["sha256"] = self.digests[entry["path"]]

    def __enter__(self) -> InputDigests:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stopped.set()  # a failed run does not wait for the rest of a file's hash
