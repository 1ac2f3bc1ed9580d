"""FlowMason's spellings of a pipeline file, mapped onto ours, and keys unknown to both reported.

FlowMason tolerates keys it does not know (its stage model allows extras) and spells some fields
differently (``type``, ``http-request``, ``input_mapping``, Studio's ``error_handling``). A file
written for it must load here unchanged, yet a typo must not pass silently: a key neither
FlowMason nor flowmasond defines is dropped with a warning naming the closest known key, and
``--strict`` (or the ``strict`` setting) turns those warnings into errors.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from flowmasond.engine.models import FLOWMASON_RETRY_IGNORED
from flowmasond.errors import ValidationIssue

# Keys FlowMason defines on a pipeline (canonical schema, `flowmason init` and Studio templates)
# that this project does not model: accepted and dropped. Everything else FlowMason defines is a
# field of PipelineConfig.
FLOWMASON_PIPELINE_KEYS = frozenset({
    "overrides",  # consumed when `extends` is resolved
    "author", "created_at", "updated_at", "icon", "license", "estimated_duration", "estimated_cost",
    "estimated_time", "prerequisites", "related_templates", "documentation",
})
# Stage keys FlowMason defines that are spellings of ours (normalise_stage maps them).
FLOWMASON_STAGE_SPELLINGS = frozenset({"type", "component", "input_mapping", "error_handling", "model"})
# Inheritance chains longer than this are almost certainly a mistake (or a cycle through ids).
MAX_EXTENDS_DEPTH = 16


def unknown_keys(data: dict[str, Any], file: str) -> tuple[dict[str, Any], list[ValidationIssue]]:
    """``data`` without keys unknown to both FlowMason and flowmasond, and a warning for each."""
    from flowmasond.engine.models import PipelineConfig, RetryConfig, StageConfig
    from flowmasond.pipelines.validation import did_you_mean

    warnings: list[ValidationIssue] = []
    top_known = _model_keys(PipelineConfig) | FLOWMASON_PIPELINE_KEYS
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key in FLOWMASON_PIPELINE_KEYS:
            continue  # FlowMason documentation fields flowmasond does not keep
        if key in top_known:
            out[key] = value
        else:
            warnings.append(ValidationIssue(
                f"unknown top-level key '{key}' is ignored{did_you_mean(key, sorted(top_known), 'known keys')}",
                file=file, field=key, severity="warning"))
    stages = out.get("stages")
    if isinstance(stages, list):
        stage_known = _model_keys(StageConfig) | FLOWMASON_STAGE_SPELLINGS
        retry_known = _model_keys(RetryConfig) | {"backoff_ms"}
        cleaned: list[Any] = []
        for index, stage in enumerate(stages):
            if not isinstance(stage, dict):
                cleaned.append(stage)
                continue
            name = stage.get("id") if isinstance(stage.get("id"), str) and stage.get("id") else f"stages[{index}]"
            kept = {}
            for key, value in stage.items():
                if key in stage_known:
                    kept[key] = value
                else:
                    warnings.append(ValidationIssue(
                        f"unknown stage key '{key}' is ignored"
                        f"{did_you_mean(key, sorted(stage_known), 'known keys')}",
                        file=file, stage=name, field=key, severity="warning"))
            retry = kept.get("retry_config")
            if isinstance(retry, dict):
                for key in retry:
                    if key in FLOWMASON_RETRY_IGNORED:
                        warnings.append(ValidationIssue(
                            f"retry_config.{key} is not honoured: flowmasond decides retries by the "
                            "error's classification (see the README)", file=file, stage=name,
                            field=f"retry_config.{key}", severity="warning"))
                    elif key not in retry_known:
                        warnings.append(ValidationIssue(
                            f"unknown retry_config key '{key}' is ignored"
                            f"{did_you_mean(key, sorted(retry_known), 'known keys')}",
                            file=file, stage=name, field=f"retry_config.{key}", severity="warning"))
                kept["retry_config"] = {k: v for k, v in retry.items() if k in retry_known}
            cleaned.append(kept)
        out["stages"] = cleaned
    return out, warnings


def _model_keys(model: Any) -> set[str]:
    keys: set[str] = set()
    for name, info in model.model_fields.items():
        keys.add(name)
        if isinstance(info.alias, str):
            keys.add(info.alias)
    return keys


# -- inheritance ---------------------------------------------------------------------------------


class InheritanceError(Exception):
    """A parent could not be found or read, or the chain loops."""


def resolve_extends(data: dict[str, Any], load_parent: Callable[[str], dict[str, Any]],
                    seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """``data`` merged onto its ``extends`` chain, the way FlowMason merges a child pipeline.

    The parent's stages come first in their order; ``overrides`` deep-merges into inherited
    stages by id; a child stage with a parent's id replaces it; new child stages are appended.
    Schemas merge their ``properties`` and ``required``; other top-level keys of the child win.
    ``load_parent(ref)`` returns the parent's raw JSON object (``ref`` may carry ``@version``).
    """
    ref = data.get("extends")
    if not isinstance(ref, str) or not ref:
        return data
    parent_id = ref.split("@", 1)[0]
    if parent_id in seen or len(seen) >= MAX_EXTENDS_DEPTH:
        raise InheritanceError("inheritance cycle: " + " -> ".join([*seen, parent_id]))
    parent = resolve_extends(load_parent(ref), load_parent, (*seen, parent_id))
    if "@" in ref:
        wanted = ref.split("@", 1)[1]
        if str(parent.get("version", "1.0.0")) != wanted:
            raise InheritanceError(f"extends '{ref}' but '{parent_id}' is version {parent.get('version', '1.0.0')}")
    merged = {k: copy.deepcopy(v) for k, v in parent.items() if k not in ("abstract", "id", "extends")}
    for key, value in data.items():
        if key in ("stages", "overrides"):
            continue
        if key in ("input_schema", "output_schema") and isinstance(value, dict) \
                and isinstance(merged.get(key), dict):
            merged[key] = _merge_schema(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    raw_overrides = data.get("overrides")
    overrides: dict[str, Any] = raw_overrides if isinstance(raw_overrides, dict) else {}
    child_stages = [s for s in data.get("stages") or [] if isinstance(s, dict)]
    child_by_id = {s.get("id"): s for s in child_stages}
    stages: list[Any] = []
    for stage in parent.get("stages") or []:
        if not isinstance(stage, dict):
            stages.append(stage)
            continue
        sid = stage.get("id")
        if sid in child_by_id:
            stages.append(copy.deepcopy(child_by_id[sid]))
            continue
        patch = overrides.get(sid) if isinstance(sid, str) else None
        stages.append(_deep_merge(stage, patch) if isinstance(patch, dict) else copy.deepcopy(stage))
    parent_ids = {s.get("id") for s in parent.get("stages") or [] if isinstance(s, dict)}
    stages.extend(copy.deepcopy(s) for s in child_stages if s.get("id") not in parent_ids)
    merged["stages"] = stages
    merged["extends"] = parent_id
    merged["abstract"] = bool(data.get("abstract", False))
    return merged


def unknown_override_targets(data: dict[str, Any], merged: dict[str, Any]) -> list[str]:
    """``overrides`` keys that name no inherited stage (they would silently do nothing)."""
    raw_overrides = data.get("overrides")
    overrides: dict[str, Any] = raw_overrides if isinstance(raw_overrides, dict) else {}
    ids = {s.get("id") for s in merged.get("stages") or [] if isinstance(s, dict)}
    return [key for key in overrides if key not in ids]


def _deep_merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    result = copy.deepcopy(base)
    for key, value in patch.items():
        if isinstance(result.get(key), dict) and isinstance(value, dict):
            result[key] = _deep_merge(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def _merge_schema(parent: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
    merged = _deep_merge(parent, {k: v for k, v in child.items() if k not in ("properties", "required")})
    if isinstance(child.get("properties"), dict):
        merged["properties"] = {**(merged.get("properties") or {}), **copy.deepcopy(child["properties"])}
    if isinstance(child.get("required"), list):
        merged["required"] = list(dict.fromkeys([*(merged.get("required") or []), *child["required"]]))
    return merged


# -- component config ------------------------------------------------------------------------------

# Config keys FlowMason's components define that flowmasond's do not take: accepted (even under
# --strict) and dropped; the README's "Coming from FlowMason" table says why for each.
FLOWMASON_IGNORED_CONFIG: dict[str, frozenset[str]] = {
    "json_transform": frozenset({"flatten", "exclude_fields", "parse_json_strings"}),
    "logger": frozenset({"emit_to_trace"}),
    "generator": frozenset({"model", "provider"}),
    "critic": frozenset({"model", "provider"}),
    "improver": frozenset({"model", "provider"}),
    "selector": frozenset({"model", "provider"}),
    "synthesizer": frozenset({"model", "provider"}),
    "subpipeline": frozenset({"wait_for_completion"}),
}


def flowmason_ignored_keys(component: str) -> frozenset[str]:
    """Config keys of ``component`` that FlowMason defines and flowmasond accepts but ignores."""
    return FLOWMASON_IGNORED_CONFIG.get(component, frozenset())
