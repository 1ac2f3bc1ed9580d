"""Journals written before ControlFlowState (version-1 decision dicts) still resume (issue 11).

``data/v1_journal.sqlite3`` was written by the code of commit a1db120 (``data/make_v1_journal.py``):
two runs stopped with untyped decisions committed. Today's daemon reads them as typed states and
finishes both runs without repeating a committed stage.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from flowmasond.config import DaemonConfig
from flowmasond.engine.flow_state import CaughtError, ControlFlowState, TryPhase
from flowmasond.environment import DEFAULT_ENV_ALLOW
from flowmasond.engine.interfaces import RunStatus
from flowmasond.errors import JournalError
from flowmasond.journal import Journal
from flowmasond.pipelines.catalog import PipelineCatalog
from flowmasond.runs import RunManager
from flowmasond.testing import build_registry, read_ledger

V1_JOURNAL = Path(__file__).parent / "data" / "v1_journal.sqlite3"


@pytest.fixture
async def manager(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A run manager over a copy of the version-1 journal, with an empty pipeline folder: resumes
    use the definitions the runs pinned."""
    state = tmp_path / "state"
    state.mkdir()
    shutil.copy(V1_JOURNAL, state / "journal.sqlite3")
    folder = tmp_path / "pipelines"
    folder.mkdir()
    monkeypatch.setenv("LEDGER", str(tmp_path / "ledger.jsonl"))
    # The old pipelines read {{env.LEDGER}}: allowed here as an operator would allow it.
    config = DaemonConfig(state_dir=state, socket=tmp_path / "x.sock", pipeline_dirs=[folder],
                          env_allow=[*DEFAULT_ENV_ALLOW, "LEDGER"])
    journal = await Journal.open(config.journal_path)
    registry = build_registry()
    catalog = PipelineCatalog(registry, [folder])
    catalog.load_all()
    yield RunManager(journal=journal, catalog=catalog, registry=registry, config=config)
    await journal.close()


async def _finish(manager: RunManager, run_id: str) -> object:
    await manager.resume(run_id)
    while manager.active:
        await asyncio.gather(*(a.task for a in manager.active.values() if a.task is not None))
    return await manager.journal.get_run(run_id)


async def test_version_1_decisions_are_read_as_typed_states(manager: RunManager) -> None:
    """Every kind of version-1 decision decodes to the ControlFlowState it meant."""
    states = (await manager.journal.load_snapshot("legacy-catch")).states

    assert states["cond"] == ControlFlowState(kind="conditional", branch=True)
    assert states["route"] == ControlFlowState(kind="router", route="b", selected=("rb",))
    assert states["loop"] == ControlFlowState(kind="foreach", items=(1, 2, 3))
    assert states["call"].kind == "subpipeline" and states["call"].pipeline_id == "legacychild"
    assert states["call"].child_run_id
    assert states["tc"] == ControlFlowState(kind="trycatch", phase=TryPhase.CATCH, caught=CaughtError(
        "try failed (stage=tc/boom, attempt=1)", "COMPONENT", "boom", "tc/boom"))
    ret = (await manager.journal.load_snapshot("legacy-return")).states["ret"]
    assert ret == ControlFlowState(kind="return", returned=True, return_value={"early": 1})


async def test_a_run_stopped_in_its_catch_phase_under_version_1_resumes_there(manager: RunManager,
                                                                              tmp_path: Path) -> None:
    """The resumed run replays the branch, route, loop items and child run it committed, retries
    only the catch stage, and runs nothing that was committed. Its trycatch sets no error_scope, so
    it now takes FlowMason's default (propagate): after the catch stage succeeds the failure still
    ends the run, and the stage after the trycatch never runs."""
    row = await _finish(manager, "legacy-catch")

    assert row.status is RunStatus.FAILED
    assert "try failed" in (row.error or {}).get("message", "")
    # cleanup (finally) was committed after the catch stage failed; nothing committed runs again.
    assert read_ledger(tmp_path / "ledger.jsonl") == []


async def test_a_return_committed_under_version_1_ends_the_resumed_run(manager: RunManager,
                                                                       tmp_path: Path) -> None:
    """A version-1 return decision still ends the resumed run with its committed value."""
    row = await _finish(manager, "legacy-return")

    assert row.status is RunStatus.SUCCEEDED, row.error
    assert row.output == {"early": 1}
    assert read_ledger(tmp_path / "ledger.jsonl") == []


def test_a_state_of_a_newer_version_is_refused_clearly() -> None:
    """A state written by a newer daemon is a JournalError naming its version, not a wrong replay."""
    with pytest.raises(JournalError, match="version 3"):
        ControlFlowState.from_json({"v": 3, "kind": "foreach"})


def test_every_state_survives_its_json_form() -> None:
    """to_json then from_json gives back the same state, for every kind."""
    from flowmasond.engine.interfaces import ComponentResult, ErrorType, StageStatus

    failed = ComponentResult("boom", "fail", StageStatus.FAILED, error="bad", error_type=ErrorType.COMPONENT)
    for state in (ControlFlowState.branch_taken("conditional", branch=False, selected=["n"], skipped=["y"]),
                  ControlFlowState.branch_taken("router", route="a", selected=["x"], skipped=["z"]),
                  ControlFlowState.loop([{"k": 1}, 2]),
                  ControlFlowState.caught_failure("tc/boom", failed),
                  ControlFlowState.child_run("child", "r1"),
                  ControlFlowState.return_fired({"v": [1]}, "done")):
        assert ControlFlowState.from_json(state.to_json()) == state
