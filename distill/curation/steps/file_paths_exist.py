from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from pydantic import field_validator

from distill.quarantine import Drop
from distill.reasons import Reason
from distill.record import Record
from distill.curation.steps.base import STEPS, RecordStep, StepContext, StepParams, Verdict


class FilePathsExistParams(StepParams):
    root: str | None = None

    @field_validator("root")
    @classmethod
    def _root_is_a_directory(cls, root: str | None) -> str | None:
        if root is not None and not Path(root).expanduser().is_dir():
            raise ValueError(f"not a directory: {root}")
        return root


@STEPS.register("file_paths_exist")
class FilePathsExist(RecordStep):
    """Drops records that cite a file the repository does not have (`hallucinated_file_path`): a run that reviews
    or patches a file that never existed teaches the model to invent paths.

    Off unless `root` (the repository root) is given: add it with `++curation.steps.file_paths_exist.root=DIR`.
    Each of a record's `source_files` must name a file under `root` (relative, or absolute inside it; `..` may not
    leave it). Records without source_files are kept.
    """

    kind = "file_paths_exist"
    Params = FilePathsExistParams
    reasons = (Reason.hallucinated_file_path,)
    params: FilePathsExistParams

    def __init__(self, name: str, params: FilePathsExistParams, context: StepContext) -> None:
        super().__init__(name, params, context)
        self.root = Path(params.root).expanduser().resolve() if params.root else None
        self._known: dict[str, bool] = {}

    def map_batch(self, batch: Sequence[Record]) -> list[Verdict]:
        if self.root is None:
            return list(batch)
        verdicts: list[Verdict] = []
        for record in batch:
            missing = [path for path in record.source_files or () if not self._exists(path)]
            if missing:
                verdicts.append(Drop(Reason.hallucinated_file_path, tuple(f"no such file under root: {p}" for p in missing)))
            else:
                verdicts.append(record)
        return verdicts

    def _exists(self, path: str) -> bool:
        known = self._known.get(path)
        if known is None:
            known = self._known[path] = self._inside_root(path)
        return known

    def _inside_root(self, path: str) -> bool:
        assert self.root is not None
        if not path.strip():
            return False
        candidate = Path(path) if PurePosixPath(path).is_absolute() else self.root / path
        resolved = candidate.resolve()
        return resolved.is_relative_to(self.root) and resolved.is_file()
