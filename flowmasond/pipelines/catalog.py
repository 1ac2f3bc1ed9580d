"""The pipeline catalog: every ``*.pipeline.json`` in the configured folders, last good version kept."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Iterable

import structlog

from flowmasond.engine.models import PipelineConfig
from flowmasond.engine.registry import ComponentRegistry
from flowmasond.errors import FlowmasonError, PipelineNotFoundError, ValidationIssue
from flowmasond.pipelines.loader import DEFAULT_LIMITS, FileLimits, check_pipeline_file

log = structlog.get_logger("flowmasond.pipelines")

PIPELINE_SUFFIX = ".pipeline.json"


@dataclass(slots=True)
class CatalogEntry:
    """One pipeline as the catalog knows it: the version in force and the file's latest problem."""

    pipeline: PipelineConfig | None
    path: Path
    issues: list[ValidationIssue] = field(default_factory=list)  # of the latest version of the file
    mtime: float = 0.0
    # Keys unknown to FlowMason and flowmasond in the version in force (dropped when it loaded).
    warnings: list[ValidationIssue] = field(default_factory=list)


class PipelineCatalog:
    """Pipelines by id, loaded from folders; an invalid edit keeps the last good version in force."""

    def __init__(self, registry: ComponentRegistry, folders: Iterable[str | Path] = (), *,
                 limits: FileLimits = DEFAULT_LIMITS, strict: bool = False) -> None:
        self.registry = registry
        self.limits = limits
        self.strict = strict  # warnings (keys unknown to FlowMason and us) reject a file
        self.folders = [Path(f) for f in folders]
        self._by_id: dict[str, CatalogEntry] = {}
        self._id_of_path: dict[Path, str] = {}
        self._broken: dict[Path, list[ValidationIssue]] = {}  # files that never loaded

    # -- queries --------------------------------------------------------------------------------
    def get(self, pipeline_id: str) -> PipelineConfig:
        entry = self._by_id.get(pipeline_id)
        if entry is None or entry.pipeline is None:
            raise PipelineNotFoundError(f"no pipeline {pipeline_id!r}", pipeline_id=pipeline_id,
                                        known=sorted(self.ids())[:20])
        return entry.pipeline

    def __getitem__(self, pipeline_id: str) -> PipelineConfig:
        try:
            return self.get(pipeline_id)
        except PipelineNotFoundError:
            raise KeyError(pipeline_id) from None

    def ids(self) -> list[str]:
        return sorted(pid for pid, e in self._by_id.items() if e.pipeline is not None)

    def entries(self) -> dict[str, CatalogEntry]:
        return dict(self._by_id)

    def broken_files(self) -> dict[Path, list[ValidationIssue]]:
        """Files that have no valid version at all, with their problems."""
        return dict(self._broken)

    def pipelines(self) -> list[PipelineConfig]:
        return [e.pipeline for e in self._by_id.values() if e.pipeline is not None]

    # -- loading --------------------------------------------------------------------------------
    def files(self) -> list[Path]:
        found: list[Path] = []
        for folder in self.folders:
            if folder.is_dir():
                found.extend(sorted(p for p in folder.glob(f"*{PIPELINE_SUFFIX}") if p.is_file()))
        return found

    def load_all(self) -> list[str]:
        """(Re)load every file; returns the ids whose definition changed. Deleted files are dropped."""
        seen = set()
        changed: list[str] = []
        for path in self.files():
            seen.add(path.resolve())
            pid = self.load_file(path)
            if pid:
                changed.append(pid)
        for path in list(self._id_of_path):
            if path not in seen:
                removed = self.remove_file(path)
                if removed:
                    changed.append(removed)
        for path in list(self._broken):
            if path not in seen:
                del self._broken[path]
        return changed

    def load_file(self, path: str | Path) -> str | None:
        """Load one file. Returns the pipeline id if its definition in force changed."""
        path = Path(path).resolve()
        try:
            mtime = path.stat().st_mtime
            check = check_pipeline_file(path, self.registry, self.limits, strict=self.strict)
        except FileNotFoundError:
            return self.remove_file(path)
        except (OSError, FlowmasonError) as exc:
            self._record_problem(path, [ValidationIssue(str(exc), file=str(path))])
            return None
        except Exception as exc:  # noqa: BLE001 - no file may stop the daemon from starting or reloading
            log.exception("pipeline_load_crashed", file=str(path))
            self._record_problem(path, [ValidationIssue(f"cannot load: {type(exc).__name__}: {exc}"[:500],
                                                        file=str(path))])
            return None
        if not check.ok:
            if not path.exists():
                return self.remove_file(path)
            self._record_problem(path, check.issues)
            return None
        pipeline = check.config
        assert pipeline is not None
        if check.warnings:
            log.warning("pipeline_warnings", file=str(path), pipeline_id=pipeline.id,
                        warnings=[str(i) for i in check.warnings])
        clash = self._by_id.get(pipeline.id)
        if clash is not None and clash.path != path and clash.pipeline is not None:
            self._record_problem(path, [ValidationIssue(
                f"pipeline id {pipeline.id!r} is already defined by {clash.path}", file=str(path), field="id")])
            return None
        old_id = self._id_of_path.get(path)
        if old_id is not None and old_id != pipeline.id:
            self._by_id.pop(old_id, None)
        previous = self._by_id.get(pipeline.id)
        self._by_id[pipeline.id] = CatalogEntry(pipeline=pipeline, path=path, mtime=mtime,
                                                warnings=list(check.warnings))
        self._id_of_path[path] = pipeline.id
        self._broken.pop(path, None)
        # Computed at load, once per definition (its canonical JSON is kept with it): every run
        # pins the definition by this hash, and 1,000 schedules firing together must not compute
        # 1,000 of them on the event loop at their fire time.
        digest = pipeline.content_hash()
        if previous is None or previous.pipeline is None or previous.pipeline.content_hash() != digest:
            log.info("pipeline_loaded", pipeline_id=pipeline.id, file=str(path), stages=len(pipeline.stages))
            self._reload_children(pipeline.id, path)
            return pipeline.id
        return None

    def _reload_children(self, parent_id: str, parent_path: Path) -> None:
        """Pipelines that ``extends`` ``parent_id`` are merged again with its new version, and files
        rejected for their ``extends`` (the parent was missing or broken) are tried again."""
        for entry in list(self._by_id.values()):
            if entry.pipeline is not None and entry.pipeline.extends == parent_id and entry.path != parent_path:
                self.load_file(entry.path)
        for path, issues in list(self._broken.items()):
            if path != parent_path and any(issue.field == "extends" for issue in issues):
                self.load_file(path)

    def remove_file(self, path: str | Path) -> str | None:
        path = Path(path).resolve()
        self._broken.pop(path, None)
        pid = self._id_of_path.pop(path, None)
        if pid is not None and (entry := self._by_id.get(pid)) is not None and entry.path == path:
            del self._by_id[pid]
            log.info("pipeline_removed", pipeline_id=pid, file=str(path))
            # Children of a removed parent keep their last good version and report why.
            self._reload_children(pid, path)
            return pid
        return None

    def _record_problem(self, path: Path, issues: list[ValidationIssue]) -> None:
        pid = self._id_of_path.get(path)
        if pid is not None and pid in self._by_id:
            # Keep the last good version running; remember why the file on disk is not used.
            self._by_id[pid].issues = issues
            log.error("pipeline_invalid_kept_previous", file=str(path), pipeline_id=pid,
                      errors=[str(i) for i in issues])
        else:
            self._broken[path] = issues
            log.error("pipeline_invalid", file=str(path), errors=[str(i) for i in issues])
