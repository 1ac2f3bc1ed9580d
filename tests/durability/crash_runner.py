"""Child process for the crash tests: start (or, when the journal already has it, recover) one run.

Usage: python crash_runner.py STATE_DIR PIPELINES_DIR RUN_ID LEDGER [POSTGRESQL_DSN]
(with a DSN the run is journaled to that PostgreSQL database instead of the state directory.)
Prints one JSON line: the run's final status and output, and how many journal transactions this
process committed. The failpoint env var FLOWMASON_FAILPOINT_KILL_AFTER_COMMIT may kill it first.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from flowmasond.config import DaemonConfig
from flowmasond.journal import Journal
from flowmasond.logs import configure_logging
from flowmasond.pipelines.catalog import PipelineCatalog
from flowmasond.runs import RunManager
from flowmasond.testing import build_registry


async def main(state_dir: Path, pipelines_dir: Path, run_id: str, ledger: str, dsn: str | None) -> None:
    config = DaemonConfig(state_dir=state_dir, socket=state_dir / "unused.sock", pipeline_dirs=[pipelines_dir],
                          max_concurrency=4, max_recovery_attempts=1000, cancel_grace_s=0.5)
    if dsn is None:
        journal: Any = await Journal.open(config.journal_path)
    else:
        from flowmasond.journal.postgres import PgJournal

        journal = await PgJournal.open(dsn)
    try:
        registry = build_registry()
        catalog = PipelineCatalog(registry, [pipelines_dir])
        catalog.load_all()
        manager = RunManager(journal=journal, catalog=catalog, registry=registry, config=config)
        if await manager.find(run_id) is None:
            await manager.start("crashref", {"ledger": ledger, "items": [1, 2, 3, 4]}, run_id=run_id)
        else:
            await manager.recover()
        while manager.active:
            await asyncio.gather(*(a.task for a in manager.active.values() if a.task is not None))
        row = await journal.get_run(run_id)
        run_s = (row.finished_at or 0.0) - (row.started_at or 0.0)
        print(json.dumps({"status": row.status.value, "output": row.output, "error": row.error,
                          "transactions": journal.stats().transactions, "run_s": run_s}), flush=True)
    finally:
        await journal.close()


if __name__ == "__main__":
    configure_logging(level="warning", stream=sys.stderr, json=True)
    asyncio.run(main(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4],
                     sys.argv[5] if len(sys.argv) > 5 else None))
