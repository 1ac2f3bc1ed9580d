"""Parsing the structured answers nodes ask for: JSON, tolerant of code fences and stray prose."""

from __future__ import annotations

import json
import re
from typing import Any, TypeVar

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, StrictInt, ValidationError

M = TypeVar("M", bound=BaseModel)

_FENCE = re.compile(r"```[A-Za-z0-9_-]*\s*\n?(.*?)```", re.DOTALL)


def extract_json(text: str) -> Any:
    """The JSON value in a model's answer; raises ``ValueError`` when there is none.

    Accepts a bare value, a fenced block (```json ... ```), or an object/array surrounded by prose.
    """
    stripped = text.strip()
    candidates = [stripped]
    candidates += [m.group(1).strip() for m in _FENCE.finditer(stripped)]
    for open_, close in (("{", "}"), ("[", "]")):
        start, end = stripped.find(open_), stripped.rfind(close)
        if 0 <= start < end:
            candidates.append(stripped[start:end + 1])
    for candidate in candidates:
        if not candidate:
            continue
        try:
            return json.loads(candidate)
        except ValueError:
            continue
    raise ValueError("the answer contains no parsable JSON")


def parse_answer(model: type[M], text: str) -> M:
    """``text``'s JSON object validated as ``model``; ``ValueError`` says what is wrong."""
    data = extract_json(text)
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()
        )
        raise ValueError(problems) from None


class CriticAnswer(BaseModel):
    """What the critic asks the model for."""

    model_config = ConfigDict(extra="ignore")

    score: float = Field(ge=0, le=1)
    feedback: str
    overall_rating: str | None = None
    strengths: list[str] = Field(default_factory=list)
    improvements: list[str] = Field(default_factory=list)
    criterion_scores: dict[str, float] = Field(default_factory=dict)


class SelectorAnswer(BaseModel):
    """What the selector asks the model for (``reason`` is accepted for ``explanation``)."""

    model_config = ConfigDict(extra="ignore")

    selected_index: StrictInt = Field(ge=0)
    explanation: str = Field(default="", validation_alias=AliasChoices("explanation", "reason"))
    confidence: float | None = Field(default=None, ge=0, le=1)
    rankings: list[dict[str, Any]] = Field(default_factory=list)


def optional_json_object(text: str) -> dict[str, Any] | None:
    """The answer's JSON object when it has one, else None (the node then uses the text as is)."""
    try:
        data = extract_json(text)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None
