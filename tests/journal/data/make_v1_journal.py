"""Writes v1_journal.sqlite3 with the code of commit a1db120, before ControlFlowState (issue 11).

Kept to show how the fixture was made; it needs that commit's flowmasond on the path:
    git archive a1db120 | tar -x -C /tmp/oldcode
    PYTHONPATH=/tmp/oldcode python tests/journal/data/make_v1_journal.py tests/journal/data
Two runs stop with untyped version-1 control-flow decisions committed:
* ``legacy-catch`` fails in its trycatch's catch phase, after a conditional, a router, a foreach and
  a subpipeline have journaled their decisions;
* ``legacy-return`` fails after its return fired.
Stages append to ``{{env.LEDGER}}``, so a test chooses where the resumed run's side effects go.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
from pathlib import Path

from flowmasond.config import DaemonConfig
from flowmasond.journal import Journal
from flowmasond.pipelines.catalog import PipelineCatalog
from flowmasond.runs import RunManager
from flowmasond.testing import build_registry


def rec(stage_id: str, value: object, **extra: object) -> dict[str, object]:
    return {"id": stage_id, "component": "record", "config": {"ledger": "{{env.LEDGER}}", "value": value}, **extra}


PIPELINES = {
    "legacychild": {"stages": [rec("inside", "{{input.n}}")], "output_stage_id": "inside"},
    "legacy": {"stages": [
        {"id": "cond", "component": "conditional",
         "config": {"condition": "{{input.flag}}", "true_branch_stages": ["yes"], "false_branch_stages": ["no"]}},
        rec("yes", "Y"), rec("no", "N"),
        {"id": "route", "component": "router", "depends_on": ["cond"],
         "config": {"value": "{{input.route}}", "routes": {"a": ["ra"], "b": ["rb"]}}},
        rec("ra", "A"), rec("rb", "B"),
        {"id": "loop", "component": "foreach", "depends_on": ["route"],
         "config": {"items": "{{input.items}}", "loop_stages": ["each"]}},
        rec("each", "{{context.item}}"),
        {"id": "call", "component": "subpipeline", "depends_on": ["loop"],
         "config": {"pipeline_id": "legacychild", "input_data": {"n": 7}}},
        {"id": "tc", "component": "trycatch", "depends_on": ["call"],
         "config": {"try_stages": ["work", "boom"], "catch_stages": ["handler"], "finally_stages": ["cleanup"]}},
        rec("work", "w"),
        {"id": "boom", "component": "fail", "depends_on": ["work"], "config": {"message": "try failed"}},
        {"id": "handler", "component": "fail",
         "config": {"fail_attempts": "{{input.catch_failures}}", "message": "catch failed"}},
        rec("cleanup", "c"),
        rec("end", {"yes": "{{upstream.yes}}", "route": "{{upstream.route.route}}", "loop": "{{upstream.loop.results}}",
                    "child": "{{upstream.call.output}}", "caught": "{{upstream.tc.status}}"}, depends_on=["tc"]),
    ], "output_stage_id": "end"},
    "legacyreturn": {"stages": [
        {"id": "ret", "component": "return", "config": {"return_value": {"early": "{{input.v}}"}}},
        {"id": "boom", "component": "fail", "config": {"message": "sibling failed"}},
    ]},
}


async def main(out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "pipelines"
        folder.mkdir()
        for pid, definition in PIPELINES.items():
            (folder / f"{pid}.pipeline.json").write_text(json.dumps({"id": pid, **definition}))
        os.environ["LEDGER"] = str(Path(tmp) / "ledger.jsonl")
        target = out / "v1_journal.sqlite3"
        target.unlink(missing_ok=True)
        config = DaemonConfig(state_dir=Path(tmp), socket=Path(tmp) / "x.sock", pipeline_dirs=[folder])
        journal = await Journal.open(target)
        registry = build_registry()
        catalog = PipelineCatalog(registry, [folder])
        catalog.load_all()
        manager = RunManager(journal=journal, catalog=catalog, registry=registry, config=config)
        await manager.start("legacy", {"flag": True, "route": "b", "items": [1, 2, 3], "catch_failures": 1},
                            run_id="legacy-catch")
        await manager.start("legacyreturn", {"v": 1}, run_id="legacy-return")
        while manager.active:
            await asyncio.gather(*(a.task for a in manager.active.values() if a.task is not None))
        for run_id in ("legacy-catch", "legacy-return"):
            row = await journal.get_run(run_id)
            print(run_id, row.status.value, (row.error or {}).get("message"))
        await journal.close()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
