"""The kinds of ``run_events`` rows (the feed behind ``flowmason events --follow``).

Every kind is documented with its ``data`` fields in ``state/README.md``.
"""

from __future__ import annotations

from enum import Enum


class EventKind(str, Enum):
    """What happened; the value is stored in ``run_events.kind``."""

    RUN_CREATED = "run.created"  # a run was accepted (data: pipeline, hash, status, parent, schedule)
    RUN_STATUS = "run.status"  # the run changed status (data: status, previous, error)
    RUN_RESUMED = "run.resumed"  # resume was called (data: resumed_count, pipeline_hash, previous_hash)
    RUN_RECOVERY = "run.recovery"  # the daemon is recovering the run after a crash (data: recovery_attempts)
    RUN_FORKED = "run.forked"  # a rerun copied results from another run (data: forked_from, from_stage, reused)
    RUN_PAUSED = "run.paused"  # stages wait at a breakpoint (data: paused_at)
    RUN_BREAKPOINTS = "run.breakpoints"  # an operator changed breakpoints or stepping
    STAGE_STARTED = "stage.started"  # attempt 1 of a stage path began (data: attempt)
    STAGE_RETRY = "stage.retry"  # a later attempt of a stage path began (data: attempt)
    STAGE_COMPLETED = "stage.completed"  # a success result was committed (data: result summary)
    STAGE_FAILED = "stage.failed"  # a failed result was committed (data: result summary)
    STAGE_SKIPPED = "stage.skipped"  # a skipped result was committed (data: result summary)
    STAGE_DECISION = "stage.decision"  # a control-flow decision was committed (data: the decision)
