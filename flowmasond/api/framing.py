"""Turning one request line into a validated ``Request``, or into the JSON-RPC error it deserves."""

from __future__ import annotations

import json
import math
from typing import Any

from pydantic import ValidationError

from flowmason_client.protocol import MAX_JSON_DEPTH, ErrorCode, Request, RequestId

# Longest pydantic error summary put into an error message; the full list goes into data.
_SUMMARY_CHARS = 500


class RpcError(Exception):
    """A request failed with a JSON-RPC error; ``request_id`` is what the reply echoes."""

    def __init__(self, code: int, message: str, data: Any = None, *, request_id: RequestId = None) -> None:
        self.code = int(code)
        self.message = message
        self.data = data
        self.request_id = request_id
        super().__init__(message)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    # 1e999 parses to infinity, which no JSON reply can carry and no handler expects.
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:20]} is out of range")
    return value


# Built once: json.loads with hooks builds a new decoder on every call.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)


def decode_line(line: bytes) -> Any:
    """Strict UTF-8, strict JSON (no NaN/Infinity) -> a Python value; -32700 or -32600 otherwise."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RpcError(ErrorCode.PARSE_ERROR, "Parse error: the line is not valid UTF-8",
                       {"position": exc.start}) from None
    try:
        return _DECODER.decode(text)
    except RecursionError:
        raise RpcError(ErrorCode.INVALID_REQUEST, "Invalid Request: JSON nested too deeply",
                       {"max_depth": MAX_JSON_DEPTH}) from None
    except json.JSONDecodeError as exc:
        raise RpcError(ErrorCode.PARSE_ERROR, f"Parse error: {exc.msg}", {"position": exc.pos}) from None
    except ValueError as exc:  # NaN/Infinity, integers beyond Python's digit limit
        raise RpcError(ErrorCode.PARSE_ERROR, f"Parse error: {exc}") from None


def exceeds_depth(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether containers nest deeper than ``limit`` (iterative: safe on any input)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def _readable_id(message: Any) -> RequestId:
    """The request's id if it is one JSON-RPC allows, so that even a refusal can be correlated."""
    if isinstance(message, dict):
        value = message.get("id")
        if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
            return value
    return None


def parse_request(line: bytes) -> Request:
    """Validate one line as a single JSON-RPC 2.0 request."""
    message = decode_line(line)
    if isinstance(message, list):
        raise RpcError(ErrorCode.INVALID_REQUEST, "Invalid Request: batch requests are not supported")
    if not isinstance(message, dict):
        raise RpcError(ErrorCode.INVALID_REQUEST,
                       f"Invalid Request: expected a JSON object, got {_json_type(message)}")
    request_id = _readable_id(message)
    # Every level of nesting opens with a bracket or a brace: a line with no more of them than the
    # limit (counted in C, strings included) cannot nest deeper, and skips the walk of its values.
    if line.count(b"[") + line.count(b"{") > MAX_JSON_DEPTH and exceeds_depth(message):
        raise RpcError(ErrorCode.INVALID_REQUEST, "Invalid Request: JSON nested too deeply",
                       {"max_depth": MAX_JSON_DEPTH}, request_id=request_id)
    try:
        return Request.model_validate(message)
    except ValidationError as exc:
        summary, errors = summarize_validation(exc)
        raise RpcError(ErrorCode.INVALID_REQUEST, f"Invalid Request: {summary}", {"errors": errors},
                       request_id=request_id) from None


def summarize_validation(exc: ValidationError) -> tuple[str, list[dict[str, str]]]:
    """A one-line summary and a JSON-safe list of pydantic's errors (no input values echoed)."""
    errors = []
    for error in exc.errors(include_url=False, include_input=False, include_context=False):
        location = ".".join(str(part) for part in error["loc"]) or "(root)"
        errors.append({"loc": location, "msg": str(error["msg"]), "type": str(error["type"])})
    summary = "; ".join(f"{e['loc']}: {e['msg']}" for e in errors)
    if len(summary) > _SUMMARY_CHARS:
        summary = summary[: _SUMMARY_CHARS - 3] + "..."
    return summary, errors


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return type(value).__name__
