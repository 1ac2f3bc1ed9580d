"""Hot reload: watch the pipeline folders with watchfiles and reload the files that changed.

Each batch of changes is applied by looking at the files as they are *now*, not at the event
kinds, because editors save in several steps:

* rename-and-replace (vim, most IDEs, ``mv tmp x.pipeline.json``): the target vanishes for a moment,
  then reappears. A vanished file is removed from the catalog only if it is still missing after
  ``delete_grace_s``; if it is back by then it is simply reloaded.
* half-written files: a read in the middle of a write finds invalid JSON, which the catalog treats
  like any invalid edit (the last good version stays in force, the error is logged and shown by
  ``flowmason pipelines``). The rest of the write produces another change event, so the complete
  file is read in a later batch.

Valid changes replace the pipeline (runs already going keep the definition they pinned) and the
``on_change`` callback lets the scheduler follow the new schedules.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from collections.abc import Awaitable, Callable, Iterable

import structlog
from watchfiles import Change, awatch

from flowmasond.pipelines.catalog import PIPELINE_SUFFIX, PipelineCatalog

log = structlog.get_logger("flowmasond.pipelines")

# watchfiles yields a batch once no change arrived for STEP_MS, or after DEBOUNCE_MS at the latest:
# one save is one batch, and a change shows up within a fraction of a second.
DEBOUNCE_MS = 400
STEP_MS = 100
# Rename-and-replace saves leave the target missing for microseconds; a second is generous.
DELETE_GRACE_S = 1.0
# After the watcher itself fails (a watched folder removed...), retry this often.
RETRY_S = 5.0


def is_pipeline_file(change: Change, path: str) -> bool:
    """Only ``*.pipeline.json`` files matter (editor swap and temp files are ignored)."""
    return path.endswith(PIPELINE_SUFFIX)


class PipelineWatcher:
    """Reloads changed pipeline files into the catalog and reports the ids whose definition changed."""

    def __init__(self, catalog: PipelineCatalog, *, on_change: Callable[[list[str]], Awaitable[None]],
                 folders: Iterable[Path] | None = None, delete_grace_s: float = DELETE_GRACE_S) -> None:
        self.catalog = catalog
        self.on_change = on_change
        self.folders = [Path(f) for f in (catalog.folders if folders is None else folders)]
        self.delete_grace_s = delete_grace_s
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start watching (folders that do not exist are reported and skipped)."""
        self._task = asyncio.create_task(self._watch(), name="pipeline watcher")

    async def stop(self) -> None:
        """Stop watching; a batch being applied is finished first."""
        self._stop.set()
        task, self._task = self._task, None
        if task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(task), self.delete_grace_s + 5.0)
            except TimeoutError:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    async def _watch(self) -> None:
        folders = [f for f in self.folders if f.is_dir()]
        for missing in sorted(set(self.folders) - set(folders)):
            log.warning("pipeline_folder_not_watched", folder=str(missing), reason="not a directory")
        if not folders:
            return
        log.info("pipeline_watch_started", folders=[str(f) for f in folders])
        while not self._stop.is_set():
            try:
                async for changes in awatch(*folders, watch_filter=is_pipeline_file, debounce=DEBOUNCE_MS,
                                            step=STEP_MS, stop_event=self._stop, recursive=False):
                    await self.apply({Path(path) for _, path in changes})
            except Exception as exc:  # noqa: BLE001 - hot reload failing must not stop the daemon
                log.error("pipeline_watch_failed", error=str(exc), retry_in_s=RETRY_S)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), RETRY_S)

    async def apply(self, paths: set[Path]) -> list[str]:
        """Reload ``paths`` as they are on disk now; returns the ids whose definition changed."""
        changed: list[str] = []
        vanished: list[Path] = []
        for path in sorted(paths):
            if path.is_file():
                self._load(path, changed)
            else:
                vanished.append(path)
        if vanished:
            # Give a rename-and-replace save time to put the file back before removing anything.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.delete_grace_s)
            for path in vanished:
                if path.is_file():
                    self._load(path, changed)
                else:
                    removed = self.catalog.remove_file(path)
                    if removed is not None:
                        changed.append(removed)
        if changed:
            log.info("pipelines_reloaded", changed=changed)
            await self.on_change(changed)
        return changed

    def _load(self, path: Path, changed: list[str]) -> None:
        pid = self.catalog.load_file(path)  # an invalid file keeps the last good version in force
        if pid is not None:
            changed.append(pid)
