"""The wire contract shared by daemon and clients: envelopes, params models, stable error codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from flowmason_client.protocol import (
    APP_ERROR_CODES, METHODS, ErrorCode, PipelineValidateParams, Request, RunInfo, RunListParams,
    encode, make_error, parse_reply, rpc_code_for,
)
from flowmasond import errors

REPO = Path(__file__).resolve().parents[2]


def test_request_without_id_is_a_notification() -> None:
    """A request lacking the id member is a notification; an explicit null id is not."""
    assert Request.model_validate({"jsonrpc": "2.0", "method": "health"}).is_notification
    assert not Request.model_validate({"jsonrpc": "2.0", "method": "health", "id": None}).is_notification


def test_request_refuses_unknown_keys_and_loose_types() -> None:
    """Envelopes are strict: extra keys, a boolean id or a numeric version string are refused."""
    for bad in ({"jsonrpc": "2.0", "method": "m", "id": 1, "x": 1},
                {"jsonrpc": "2.0", "method": "m", "id": True},
                {"jsonrpc": 2.0, "method": "m", "id": 1}):
        with pytest.raises(ValidationError):
            Request.model_validate(bad)


def test_params_are_strict_and_closed() -> None:
    """Params models refuse coercion (\"5\" for an int), unknown statuses and unknown keys."""
    for bad in ({"limit": "5"}, {"status": "done"}, {"limit": 0}, {"colour": "red"}):
        with pytest.raises(ValidationError):
            RunListParams.model_validate(bad)


def test_validate_takes_exactly_one_of_path_or_definition() -> None:
    """pipelines.validate needs a path or a definition, not both and not neither."""
    with pytest.raises(ValidationError):
        PipelineValidateParams()
    with pytest.raises(ValidationError):
        PipelineValidateParams(path="a.pipeline.json", definition={"id": "a"})
    assert PipelineValidateParams(definition={"id": "a"}).path is None


def test_run_info_keeps_fields_the_daemon_adds() -> None:
    """Results are lenient: a newer daemon's extra fields survive instead of failing an older client."""
    info = RunInfo.model_validate({"run_id": "r", "status": "running", "attempt": 2})
    assert info.model_dump()["attempt"] == 2


def test_application_error_codes_are_stable() -> None:
    """The wire codes clients rely on do not move."""
    assert {name: rpc_code_for(name) for name in (
        "permission_denied", "run_not_found", "pipeline_not_found", "invalid_state", "pipeline_invalid",
        "definition_changed", "unsafe_to_repeat", "storage_full", "unknown_thing")} == {
        "permission_denied": -32001, "run_not_found": -32002, "pipeline_not_found": -32003,
        "invalid_state": -32004, "pipeline_invalid": -32005, "definition_changed": -32006,
        "unsafe_to_repeat": -32007, "storage_full": -32010, "unknown_thing": -32000}


def test_every_daemon_error_code_maps_inside_the_application_range() -> None:
    """Each FlowmasonError subclass's code maps to a JSON-RPC code in the server-error range."""
    classes = [c for c in vars(errors).values()
               if isinstance(c, type) and issubclass(c, errors.FlowmasonError)]
    assert len(classes) > 10
    for cls in classes:
        assert -32099 <= rpc_code_for(cls.code) <= -32000, cls
    assert set(APP_ERROR_CODES.values()) <= set(ErrorCode)


def test_only_state_changing_methods_are_mutating() -> None:
    """Starting, stopping, forking, pausing and deleting runs and changing schedules are mutating; the rest
    any peer may read."""
    assert {name for name, spec in METHODS.items() if spec.mutating} == {
        "runs.start", "runs.cancel", "runs.terminate", "runs.resume", "runs.rerun", "runs.break",
        "runs.continue", "runs.step", "runs.delete", "runs.prune", "daemon.reload", "daemon.stop",
        "schedules.pause", "schedules.unpause", "schedules.trigger"}


def test_encode_escapes_lone_surrogates_and_refuses_nan() -> None:
    """Encoded lines are ASCII (a lone surrogate stays encodable) and never carry NaN."""
    line = encode(make_error(1, -32600, "bad \ud800 name"))
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert parse_reply(json.loads(line)).error.message == "bad \ud800 name"
    with pytest.raises(ValueError):
        encode({"result": float("nan")})


def test_client_package_never_imports_the_daemon() -> None:
    """Importing the client, its protocol and its errors loads no flowmasond module."""
    code = ("import sys, flowmason_client, flowmason_client.client, flowmason_client.protocol;"
            "print([m for m in sys.modules if m.split('.')[0] == 'flowmasond'])")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
