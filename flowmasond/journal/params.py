"""Query parameters and errors both journals (SQLite and PostgreSQL) build the same way.

Each backend encodes the lists for its driver (a JSON text for SQLite's ``json_each``, an array for
PostgreSQL's ``= ANY``); what goes into them, and the operator's wording of a lost race, is here.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from flowmasond.engine.interfaces import RunStatus
from flowmasond.engine.models import PipelineConfig
from flowmasond.errors import RunConflictError


def pin_params(pipeline: PipelineConfig, now: float) -> dict[str, Any]:
    """The row that pins ``pipeline``'s definition: its content hash, id and canonical JSON."""
    return {"hash": pipeline.content_hash(), "pipeline_id": pipeline.id,
            "definition": pipeline.canonical_json(), "now": now}


def status_values(statuses: Iterable[RunStatus]) -> list[str]:
    """Sorted status values (a stable parameter for the conditional updates)."""
    return sorted(RunStatus(s).value for s in statuses)


def list_params(status: RunStatus | Iterable[RunStatus] | None, pipeline_id: str | None,
                since: float | None, until: float | None, schedule_id: str | None,
                parent_run_id: str | None) -> dict[str, Any]:
    """The filters of ``list_runs``/``count_runs``; ``statuses`` is None (any) or a list of values."""
    if status is None:
        statuses = None
    elif isinstance(status, RunStatus):
        statuses = [status.value]
    else:
        statuses = [RunStatus(s).value for s in status]
    return {"statuses": statuses, "pipeline_id": pipeline_id, "since": since, "until": until,
            "schedule_id": schedule_id, "parent_run_id": parent_run_id}


def conflict_error(run_id: str, current: str, wanted: str, expected: Iterable[str]) -> RunConflictError:
    """A conditional status change that lost its race: the run is ``current``, not one of ``expected``."""
    return RunConflictError(f"run is {current}: another operation changed it first ({wanted} needs "
                            f"one of {', '.join(expected)})", run_id=run_id, status=current, wanted=wanted)
