"""How run records map to ``run_records`` rows, and how a run's snapshot is rebuilt from them.

A result is stored field by field so that rebuilding 10,000 of them parses only their outputs;
``test_result_columns_cover_every_field`` fails if ``ComponentResult`` gains a field the table
does not hold (that needs a migration).
"""

from __future__ import annotations

import gc
import json
import json.scanner
from collections.abc import Sequence
from operator import itemgetter
from typing import Any

from flowmasond.engine.interfaces import ComponentResult, ErrorType, RunSnapshot, StageStatus, UsageMetrics
from flowmasond.engine.flow_state import ControlFlowState
from flowmasond.journal.rows import dumps, dumps_or_none

_STATUS = {status.value: status for status in StageStatus}
_ERROR_TYPE = {error_type.value: error_type for error_type in ErrorType}
# json's C scanner, called directly: json.loads costs four Python calls and a regular expression
# match around it per document, which is most of decoding a small output (0.75 µs of 0.85 for
# "{}"), times 10,000 results in a resume.
# (typeshed types make_scanner's argument as the scanner class itself; a decoder is what it takes)
_scan = json.scanner.make_scanner(json.JSONDecoder())  # type: ignore[arg-type]


def _loads(text: str) -> Any:
    """The JSON document ``text`` (as ``json.loads``, which decides any text the scanner alone cannot)."""
    try:
        value, end = _scan(text, 0)
    except (StopIteration, TypeError, ValueError):
        return json.loads(text)  # leading whitespace, bytes, or invalid: json.loads decides or raises
    if end != len(text):
        return json.loads(text)  # trailing whitespace, or trailing data (which json.loads refuses)
    return value


def result_values(result: ComponentResult) -> tuple[Any, ...]:
    """``insert_result`` parameters ?4 to ?21 of ``result``, in the order the query lists them."""
    usage = result.usage
    error_type = result.error_type
    return (result.stage_id, result.component_type, result.status.value,
            dumps_or_none(result.output), result.error,
            None if error_type is None else error_type.value, result.attempts,
            result.started_at, result.finished_at, 1 if result.handled else 0,
            usage.input_tokens, usage.output_tokens, usage.cost_usd, usage.duration_ms,
            usage.provider, usage.model, result.trace_id, result.span_id)


def state_value(state: ControlFlowState) -> str:
    """``insert_decision`` parameter ?4: the control-flow state as a versioned JSON document."""
    return dumps(state.to_json())


def decode_snapshot(rows: Sequence[Sequence[Any]]) -> RunSnapshot | None:
    """The snapshot of ``snapshot`` query rows (None if they hold no 'run' row: no such run)."""
    # The run's row comes first (the first arm of the UNION ALL: SQLite returns the arms in
    # order), but nothing here depends on it.
    at = 0 if rows and rows[0][0] == "run" else next(
        (i for i, row in enumerate(rows) if row[0] == "run"), None)
    if at is None:
        return None
    attempts: dict[str, int] = json.loads(rows[at][3])
    records = [*rows[:at], *rows[at + 1:]]
    # Applied oldest first (the latest record per path wins); already in order in practice
    # (the primary key's order), which makes the check a single pass and the sort rare.
    if any(records[i][1] > records[i + 1][1] for i in range(len(records) - 1)):
        records = sorted(records, key=_seq)
    # Building thousands of small acyclic objects would trigger the cyclic collector several
    # times (full collections of the whole heap among them, 30-50 ms at 10,000 stages); none of
    # them can be garbage, so collection waits until the snapshot is built.
    collecting = gc.isenabled()
    if collecting:
        gc.disable()
    try:
        snapshot = _decode(records)
    finally:
        if collecting:
            gc.enable()
    snapshot.attempts = attempts
    return snapshot


_seq = itemgetter(1)


def _decode(records: Sequence[Sequence[Any]]) -> RunSnapshot:
    """The snapshot of ``records`` (record rows of ``snapshot``, oldest first; the latest wins)."""
    snapshot = RunSnapshot()
    results, states = snapshot.results, snapshot.states
    state_of = ControlFlowState.from_json  # reads version-1 rows of older journals too
    loads, status_of, error_type_of = _loads, _STATUS.__getitem__, _ERROR_TYPE.get
    result_of, usage_of = ComponentResult, UsageMetrics
    for (kind, _seq_no, path, decision, stage_id, component_type, status, output, error, error_type,
         llm_usage, duration_ms, attempts_made, started_at, finished_at, handled, trace_id, span_id) in records:
        if kind == "result":
            if llm_usage is None:
                usage = usage_of(0, 0, 0.0, duration_ms, None, None)
            else:
                input_tokens, output_tokens, cost_usd, provider, model = loads(llm_usage)
                usage = usage_of(input_tokens, output_tokens, cost_usd, duration_ms, provider,
                                 model)
            results[path] = result_of(
                stage_id, component_type, status_of(status),
                None if output is None else loads(output), error,
                None if error_type is None else error_type_of(error_type),
                usage, attempts_made, started_at, finished_at, handled == 1, trace_id, span_id)
        else:
            states[path] = state_of(loads(decision))
    return snapshot
