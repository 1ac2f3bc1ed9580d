"""Run inputs from the command line: ``--input JSON``, ``--input-file F`` and ``-i key=value``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from collections.abc import Sequence


def parse_inputs(*, input_json: str | None = None, input_file: str | None = None,
                 pairs: Sequence[str] | None = None) -> dict[str, Any]:
    """Merge the three sources (file, then JSON, then pairs); ``ValueError`` says what is wrong.

    A pair's value is parsed as JSON when it is JSON (``-i n=3`` is a number), else kept as text.
    """
    inputs: dict[str, Any] = {}
    if input_file:
        try:
            data = json.loads(Path(input_file).read_text())
        except OSError as exc:
            raise ValueError(f"--input-file {input_file}: {exc.strerror or exc}") from None
        except json.JSONDecodeError as exc:
            raise ValueError(f"--input-file {input_file} is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ValueError("--input-file must hold a JSON object")
        inputs.update(data)
    if input_json:
        try:
            data = json.loads(input_json)
        except json.JSONDecodeError as exc:
            raise ValueError(f"--input is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ValueError("--input must be a JSON object")
        inputs.update(data)
    for item in pairs or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"-i expects key=value, got {item!r}")
        try:
            inputs[key] = json.loads(raw)
        except json.JSONDecodeError:
            inputs[key] = raw
    return inputs
