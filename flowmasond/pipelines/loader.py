"""Loading ``*.pipeline.json`` files: JSON, then structure (pydantic), then semantics.

Every problem of a file is collected before anything is raised, so an operator fixes a file in
one round: ``PipelineValidationError.issues`` lists them all, each naming file, stage and field.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from flowmasond.engine.models import PipelineConfig, RetryConfig, ScheduleConfig, StageConfig
from flowmasond.engine.registry import ComponentRegistry
from flowmasond.errors import PipelineValidationError, ValidationIssue
from flowmasond.pipelines.compat import (
    InheritanceError,
    resolve_extends,
    unknown_keys,
    unknown_override_targets,
)
from flowmasond.pipelines.validation import (
    accepted_keys,
    describe_pydantic_error,
    did_you_mean,
    sort_issues,
    validate_pipeline,
)

PIPELINE_SUFFIX = ".pipeline.json"
# Defaults of the daemon's `limits.max_pipeline_file_bytes` and `limits.max_json_depth` (config.py
# says why these values); the `validate` command and embedders use them too.
DEFAULT_MAX_FILE_BYTES = 1 << 20
DEFAULT_MAX_DEPTH = 64


@dataclass(frozen=True, slots=True, kw_only=True)
class FileLimits:
    """How big and how deeply nested a pipeline document may be."""

    max_bytes: int = DEFAULT_MAX_FILE_BYTES
    max_depth: int = DEFAULT_MAX_DEPTH


DEFAULT_LIMITS = FileLimits()


@dataclass(frozen=True, slots=True, kw_only=True)
class PipelineCheck:
    """The outcome of checking one pipeline source: the config when valid, else every issue."""

    file: str
    config: PipelineConfig | None
    issues: list[ValidationIssue] = field(default_factory=list)
    # Keys unknown to FlowMason and to flowmasond (dropped); errors instead when strict.
    warnings: list[ValidationIssue] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.config is not None and not self.issues


def pipeline_id_from_path(path: str | os.PathLike[str]) -> str:
    """The default pipeline id: the file name without ``.pipeline.json`` (or ``.json``)."""
    name = Path(path).name
    for suffix in (PIPELINE_SUFFIX, ".json"):
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[:-len(suffix)]
    return Path(path).stem


def load_pipeline_file(path: str | os.PathLike[str], registry: ComponentRegistry,
                       limits: FileLimits = DEFAULT_LIMITS, *, strict: bool = False) -> PipelineConfig:
    """Read and validate one pipeline file; raises ``PipelineValidationError`` with every issue."""
    check = check_pipeline_file(path, registry, limits, strict=strict)
    if check.config is None or check.issues:
        raise PipelineValidationError(check.file, check.issues)
    return check.config


def load_pipeline_dict(data: Any, registry: ComponentRegistry, source: str = "<pipeline>",
                       limits: FileLimits = DEFAULT_LIMITS, *, strict: bool = False) -> PipelineConfig:
    """Validate an already-parsed pipeline (``id`` required); ``source`` names it in issues."""
    check = check_pipeline_dict(data, registry, source, limits, strict=strict)
    if check.config is None or check.issues:
        raise PipelineValidationError(check.file, check.issues)
    return check.config


def check_pipeline_file(path: str | os.PathLike[str], registry: ComponentRegistry,
                        limits: FileLimits = DEFAULT_LIMITS, *, strict: bool = False) -> PipelineCheck:
    """Like ``load_pipeline_file`` but returns the issues instead of raising.

    A file that ``extends`` another is merged onto its parent, found in the same folder as
    ``<parent id>.pipeline.json`` or as any pipeline file there whose ``id`` is the parent id.
    """
    file = str(path)
    data, problems, duplicates = _read_json(Path(path), file, limits)
    if problems:
        return PipelineCheck(file=file, config=None, issues=problems)
    assert isinstance(data, dict)
    inherited_issues: list[ValidationIssue] = []
    if "extends" in data:
        data, inherited_issues = _resolve_inheritance(Path(path), data, file, limits)
        if data is None:
            return PipelineCheck(file=file, config=None, issues=inherited_issues)
    try:
        check = check_pipeline_data(data, registry, file, strict=strict)
    except RecursionError:
        return PipelineCheck(file=file, config=None, issues=[_too_deep(file, limits)])
    if strict:
        inherited_issues = [issue.as_error() for issue in inherited_issues]
    errors = [i for i in inherited_issues if not i.is_warning]
    warnings = [i for i in inherited_issues if i.is_warning] + check.warnings
    # A repeated key silently keeps its last value in JSON; here that would drop config unseen.
    errors += [ValidationIssue(f"duplicate JSON key '{key}' (only the last value would be used)",
                               file=file) for key in dict.fromkeys(duplicates)]
    if not errors:
        return PipelineCheck(file=file, config=check.config, issues=check.issues, warnings=warnings)
    return PipelineCheck(file=file, config=None, issues=errors + check.issues, warnings=warnings)


def _read_json(path: Path, file: str,
               limits: FileLimits) -> tuple[dict[str, Any] | None, list[ValidationIssue], list[str]]:
    """The file's JSON object with ``id`` defaulted, or why it cannot be one, within ``limits``."""
    try:
        # Read one byte past the limit instead of trusting stat(): the file may grow meanwhile.
        with open(path, "rb") as fh:
            raw = fh.read(limits.max_bytes + 1)
        if len(raw) > limits.max_bytes:
            return None, [ValidationIssue(f"file is larger than the limit max_pipeline_file_bytes = "
                                          f"{limits.max_bytes} bytes; it was not parsed", file=file)], []
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, [ValidationIssue(f"file is not UTF-8 text: {exc.reason} at byte {exc.start}", file=file)], []
    except OSError as exc:
        return None, [ValidationIssue(f"cannot read file: {exc.strerror or exc}", file=file)], []
    depth = text_depth(text)
    if depth > limits.max_depth:
        return None, [_too_deep(file, limits, depth)], []
    duplicates: list[str] = []
    try:
        data = json.loads(text, object_pairs_hook=lambda pairs: _no_duplicate_keys(pairs, duplicates))
    except json.JSONDecodeError as exc:
        return None, [ValidationIssue(f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}",
                                      file=file)], duplicates
    except RecursionError:  # text_depth counts brackets; this is the net under it
        return None, [_too_deep(file, limits)], duplicates
    if not isinstance(data, dict):
        return None, [ValidationIssue(f"a pipeline file must hold a JSON object, not {_json_type(data)}",
                                      file=file)], duplicates
    data.setdefault("id", pipeline_id_from_path(path))
    return data, [], duplicates


def _resolve_inheritance(path: Path, data: dict[str, Any], file: str,
                         limits: FileLimits) -> tuple[dict[str, Any] | None, list[ValidationIssue]]:
    """``data`` merged onto its ``extends`` chain from ``path``'s folder, or the reason it cannot be."""
    folder = path.parent

    def load_parent(ref: str) -> dict[str, Any]:
        parent_id = ref.split("@", 1)[0]
        candidates = [folder / f"{parent_id}{PIPELINE_SUFFIX}"]
        candidates += sorted(p for p in folder.glob(f"*{PIPELINE_SUFFIX}") if p not in candidates)
        for candidate in candidates:
            if not candidate.is_file() or candidate.resolve() == path.resolve():
                continue
            parent, problems, _ = _read_json(candidate, str(candidate), limits)
            if parent is not None and parent.get("id") == parent_id:
                return parent
            if problems and candidate == candidates[0]:
                raise InheritanceError(f"parent '{parent_id}' ({candidate.name}): {problems[0].message}")
        raise InheritanceError(f"extends unknown pipeline '{parent_id}' (no pipeline with that id in {folder})")

    try:
        merged = resolve_extends(data, load_parent, (str(data.get("id")),))
    except InheritanceError as exc:
        return None, [ValidationIssue(str(exc), file=file, field="extends")]
    warnings = [ValidationIssue(f"overrides names '{key}', which is not an inherited stage", file=file,
                                field=f"overrides.{key}", severity="warning")
                for key in unknown_override_targets(data, merged)]
    return merged, warnings


def check_pipeline_dict(data: Any, registry: ComponentRegistry, source: str = "<pipeline>",
                        limits: FileLimits = DEFAULT_LIMITS, *, strict: bool = False) -> PipelineCheck:
    """Like ``load_pipeline_dict`` but returns the issues (and warnings) instead of raising."""
    if value_depth(data, limits.max_depth) > limits.max_depth:
        return PipelineCheck(file=source, config=None, issues=[_too_deep(source, limits)])
    return check_pipeline_data(data, registry, source, strict=strict)


def check_pipeline_data(data: Any, registry: ComponentRegistry, file: str, *,
                        strict: bool = False) -> PipelineCheck:
    """Structural then semantic validation of parsed JSON; every issue names ``file``.

    Keys unknown to FlowMason and to flowmasond are dropped with a warning (errors when
    ``strict``); so are config keys a component does not take.
    """
    warnings: list[ValidationIssue] = []
    if isinstance(data, dict):
        data, warnings = unknown_keys(data, file)
    try:
        config = PipelineConfig.model_validate(data)
    except ValidationError as exc:
        issues = _structural_issues(exc, data, file)
        partial, unparsed = _partial_config(data)
        issues.extend(validate_pipeline(partial, registry, file, unparsed_stage_ids=unparsed))
        issues, warnings = _split(issues, warnings, strict)
        return PipelineCheck(file=file, config=None, issues=sort_issues(issues, _raw_stage_ids(data)),
                             warnings=warnings)
    issues, warnings = _split(validate_pipeline(config, registry, file) + _schema_issues(config, file),
                              warnings, strict)
    if issues:
        return PipelineCheck(file=file, config=None, issues=issues, warnings=warnings)
    return PipelineCheck(file=file, config=_drop_unknown_config(config, registry), issues=[],
                         warnings=warnings)


def _split(issues: list[ValidationIssue], warnings: list[ValidationIssue],
           strict: bool) -> tuple[list[ValidationIssue], list[ValidationIssue]]:
    everything = warnings + issues
    if strict:
        return [i.as_error() if i.is_warning else i for i in everything], []
    return [i for i in everything if not i.is_warning], [i for i in everything if i.is_warning]


def _drop_unknown_config(config: PipelineConfig, registry: ComponentRegistry) -> PipelineConfig:
    """The pipeline without config keys its components do not take (they were warned about)."""
    stages = []
    changed = False
    for stage in config.stages:
        model = registry.meta(stage.component_type).input_model
        accepted = accepted_keys(model) if model.model_config.get("extra") != "allow" else None
        if accepted is not None and not accepted.issuperset(stage.config):
            stage = stage.model_copy(update={"config": {k: v for k, v in stage.config.items() if k in accepted}})
            changed = True
        stages.append(stage)
    return config.model_copy(update={"stages": stages}) if changed else config


def _schema_issues(config: PipelineConfig, file: str) -> list[ValidationIssue]:
    """input_schema and output_schema must be valid JSON Schema (Draft 2020-12) at load time."""
    from flowmasond.components.operators.schema import check_schema

    issues: list[ValidationIssue] = []
    for name in ("input_schema", "output_schema"):
        schema = getattr(config, name)
        if schema:
            issues.extend(ValidationIssue(problem, file=file, field=name)
                          for problem in check_schema(schema, path=name))
    return issues


# A JSON string (escapes included): brackets inside one do not nest anything.
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_BRACKET = re.compile(r"[\[\]{}]")


def text_depth(text: str) -> int:
    """How deeply the arrays and objects of JSON ``text`` nest, counted without recursion or parsing."""
    depth = deepest = 0
    for match in _BRACKET.finditer(_JSON_STRING.sub("", text)):
        if match.group() in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def value_depth(value: Any, stop_after: int) -> int:
    """How deeply the dicts and lists of ``value`` nest (iteratively); stops counting past ``stop_after``."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, (list, tuple)):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        if deepest > stop_after:
            return deepest
        stack.extend((child, depth + 1) for child in children)
    return deepest


def _too_deep(file: str, limits: FileLimits, depth: int | None = None) -> ValidationIssue:
    how = f"nested {depth} levels deep" if depth is not None else "nested too deeply to process"
    return ValidationIssue(f"document is {how}; the limit is max_json_depth = {limits.max_depth}", file=file)


def _no_duplicate_keys(pairs: list[tuple[str, Any]], duplicates: list[str]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            duplicates.append(key)
        result[key] = value
    return result


def _json_type(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    return "a number" if isinstance(value, (int, float)) and not isinstance(value, bool) else "a boolean"


# -- pydantic errors -> issues --------------------------------------------------------------------


def _structural_issues(exc: ValidationError, data: Any, file: str) -> list[ValidationIssue]:
    raw_stages = data.get("stages") if isinstance(data, dict) else None
    issues = []
    for error in exc.errors(include_url=False):
        loc = tuple(error["loc"])
        stage = None
        rest = loc
        if len(loc) >= 2 and loc[0] == "stages" and isinstance(loc[1], int):
            stage = _raw_stage_name(raw_stages, loc[1])
            rest = loc[2:]
        if error["type"] == "extra_forbidden" and loc:
            model = _model_at(loc[:-1])
            known = sorted(model.model_fields) if model is not None else []
            message = f"unknown field '{loc[-1]}'{did_you_mean(str(loc[-1]), known, 'allowed fields')}"
        else:
            message = describe_pydantic_error(error)
        field = ".".join(str(p) for p in rest) or None
        issues.append(ValidationIssue(message, file=file, stage=stage, field=field))
    return issues


def _raw_stage_ids(data: Any) -> list[str]:
    raw_stages = data.get("stages") if isinstance(data, dict) else None
    count = len(raw_stages) if isinstance(raw_stages, list) else 0
    return [_raw_stage_name(raw_stages, index) for index in range(count)]


def _raw_stage_name(raw_stages: Any, index: int) -> str:
    if isinstance(raw_stages, list) and 0 <= index < len(raw_stages):
        raw = raw_stages[index]
        if isinstance(raw, dict) and isinstance(raw.get("id"), str) and raw["id"]:
            return raw["id"]
    return f"stages[{index}]"


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model whose fields live at ``loc`` (to list allowed names for an unknown field)."""
    if loc == ():
        return PipelineConfig
    if len(loc) == 2 and loc[0] == "stages":
        return StageConfig
    if len(loc) == 3 and loc[0] == "stages" and loc[2] == "retry_config":
        return RetryConfig
    if len(loc) == 2 and loc[0] == "schedules":
        return ScheduleConfig
    return None


def _partial_config(data: Any) -> tuple[PipelineConfig, set[str]]:
    """The parts of a structurally invalid file that did parse, so semantic rules still run.

    Returns the partial config and the ids of stages that did not parse (their problems are
    already reported; references to them must not be reported as unknown stages).
    """
    data = data if isinstance(data, dict) else {}
    stages: list[StageConfig] = []
    unparsed: set[str] = set()
    raw_stages = data.get("stages")
    for raw in raw_stages if isinstance(raw_stages, list) else []:
        stage = _salvage_stage(raw)
        if stage is not None:
            stages.append(stage)
        elif isinstance(raw, dict) and isinstance(raw.get("id"), str):
            unparsed.add(raw["id"])
    schedules: list[ScheduleConfig] = []
    raw_schedules = data.get("schedules")
    for raw in raw_schedules if isinstance(raw_schedules, list) else []:
        try:
            schedules.append(ScheduleConfig.model_validate(raw))
        except ValidationError:
            pass
    output_stage_id = data.get("output_stage_id")
    partial = PipelineConfig.model_construct(
        id=str(data.get("id") or "?"), stages=stages, schedules=schedules,
        output_stage_id=output_stage_id if isinstance(output_stage_id, str) else None)
    return partial, unparsed


# Without these a stage cannot take part in any cross-stage rule.
_ESSENTIAL_STAGE_FIELDS = frozenset({"id", "component_type", "component"})


def _salvage_stage(raw: Any) -> StageConfig | None:
    """The stage with its invalid optional fields dropped, so its other fields are still checked."""
    try:
        return StageConfig.model_validate(raw)
    except ValidationError as exc:
        if not isinstance(raw, dict):
            return None
        bad = {error["loc"][0] if error["loc"] else None for error in exc.errors()}
        if None in bad or bad & _ESSENTIAL_STAGE_FIELDS:
            return None
        trimmed = {key: value for key, value in raw.items() if key not in bad}
    try:
        return StageConfig.model_validate(trimmed)
    except ValidationError:
        return None
