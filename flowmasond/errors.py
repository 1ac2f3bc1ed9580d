"""One error hierarchy for the daemon.

Every error carries a stable wire ``code`` (used on the control socket and in the journal) and the
context an operator needs to act: which file, which stage, which field. The class docstring is the
default message, so most subclasses are a name and one line.
"""

from __future__ import annotations

from typing import Any


class FlowmasonError(Exception):
    """An error in flowmasond."""

    code: str = "flowmason_error"

    def __init__(self, message: str | None = None, **context: Any) -> None:
        self.message = message or (self.__doc__ or self.code).strip()
        self.context = {k: v for k, v in context.items() if v is not None}
        super().__init__(self.message)

    def __str__(self) -> str:
        if not self.context:
            return self.message
        where = ", ".join(f"{k}={v}" for k, v in self.context.items())
        return f"{self.message} ({where})"

    def to_dict(self) -> dict[str, Any]:
        """The error as a JSON-safe mapping: code, message and context."""
        return {"code": self.code, "message": self.message, "context": _jsonable(self.context)}


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


class ConfigurationError(FlowmasonError):
    """Invalid daemon configuration."""

    code = "configuration_error"


class PipelineError(FlowmasonError):
    """A pipeline definition is invalid."""

    code = "pipeline_invalid"


class PipelineValidationError(PipelineError):
    """A pipeline file failed validation; ``issues`` lists every problem found in it."""

    code = "pipeline_invalid"

    def __init__(self, file: str, issues: list[ValidationIssue]) -> None:
        self.file = file
        self.issues = issues
        lines = "\n".join(f"  - {issue}" for issue in issues)
        super().__init__(f"{file}: {len(issues)} error(s)\n{lines}", file=file)

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        data["issues"] = [issue.to_dict() for issue in self.issues]
        return data


class ValidationIssue:
    """One problem in a pipeline file, located by stage and field."""

    __slots__ = ("field", "file", "message", "severity", "stage")

    def __init__(self, message: str, *, file: str | None = None, stage: str | None = None,
                 field: str | None = None, severity: str = "error") -> None:
        self.file = file
        self.stage = stage
        self.field = field
        self.message = message
        # "error": the file is rejected; "warning": it loads (a key unknown to FlowMason and to
        # us, dropped), unless validation is strict.
        self.severity = severity

    @property
    def is_warning(self) -> bool:
        return self.severity == "warning"

    def as_error(self) -> ValidationIssue:
        """The same issue with error severity (``--strict``)."""
        return ValidationIssue(self.message, file=self.file, stage=self.stage, field=self.field)

    def __str__(self) -> str:
        where = []
        if self.stage:
            where.append(f"stage '{self.stage}'")
        if self.field:
            where.append(f"field '{self.field}'")
        prefix = ", ".join(where)
        text = f"{prefix}: {self.message}" if prefix else self.message
        return f"warning: {text}" if self.is_warning else text

    def __repr__(self) -> str:
        return f"ValidationIssue({self.to_dict()!r})"

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form for the socket and the CLI's ``--json``."""
        return {"file": self.file, "stage": self.stage, "field": self.field, "message": self.message,
                "severity": self.severity}


class ComponentNotFoundError(FlowmasonError):
    """No component is registered under that type name."""

    code = "component_not_found"


class TemplateError(FlowmasonError):
    """A template could not be resolved."""

    code = "template_error"


class StageError(FlowmasonError):
    """A stage failed; carries the classified error type (an ``ErrorType`` value)."""

    code = "stage_failed"

    def __init__(self, message: str | None = None, *, error_type: Any = None,
                 retry_after_s: float | None = None, **context: Any) -> None:
        # Imported here: flowmasond.engine.interfaces must stay importable without this module's users.
        from flowmasond.engine.interfaces import ErrorType

        self.error_type = ErrorType(error_type) if error_type is not None else ErrorType.COMPONENT
        # A peer's request to wait (HTTP Retry-After); the retry delay is at least this long.
        self.retry_after_s = retry_after_s
        super().__init__(message, **context)


    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        data["error_type"] = self.error_type.value
        return data


class ComponentError(StageError):
    """A component reported a failure; raise it with the ErrorType that classifies it."""

    code = "component_error"


class RetryExhaustedError(StageError):
    """A stage failed on every allowed attempt."""

    code = "retry_exhausted"


class RunCancelledError(FlowmasonError):
    """The run was cancelled."""

    code = "run_cancelled"


class UnsafeToRepeatError(FlowmasonError):
    """A stage that is not safe to repeat was in flight when the run stopped; an operator must decide."""

    code = "unsafe_to_repeat"


class ChildRunInterruptedError(FlowmasonError):
    """A child run (subpipeline) stopped without finishing; its parent stops, interrupted, the same way."""

    code = "child_run_interrupted"

    def __init__(self, message: str | None = None, *, cause_code: str | None = None, **context: Any) -> None:
        super().__init__(message, **context)
        if cause_code:
            # The parent carries the child's reason (storage_full, daemon_stopped...), so recovery
            # treats it as it would the child: resumed automatically unless an operator must decide.
            self.code = cause_code


class DefinitionChangedError(FlowmasonError):
    """The pipeline changed since the run started; resuming against it must be asked for explicitly."""

    code = "definition_changed"


class JournalError(FlowmasonError):
    """The journal could not be read or written."""

    code = "journal_error"


class StorageFullError(JournalError):
    """The journal's disk (or page limit) is full; nothing committed was lost."""

    code = "storage_full"


class JournalLockedError(JournalError):
    """Another process owns this journal (its state directory); one owner per state directory."""

    code = "journal_locked"


class FencedError(JournalError):
    """This daemon may no longer write for the run (another node holds it); nothing was written."""

    code = "fenced"


class SchemaTooNewError(JournalError):
    """The journal was written by a newer flowmasond; it is left untouched."""

    code = "schema_too_new"


class RunNotFoundError(FlowmasonError):
    """No run with that id."""

    code = "run_not_found"

    def __init__(self, message: str | None = None, **context: Any) -> None:
        # One wording for every "not found": "no run 'ID'", as for pipelines, schedules and stages.
        if message is None and context.get("run_id") is not None:
            message = f"no run {context['run_id']!r}"
        super().__init__(message, **context)


class PipelineNotFoundError(FlowmasonError):
    """No pipeline with that id."""

    code = "pipeline_not_found"


class StageNotFoundError(FlowmasonError):
    """No stage with that id in the run's pipeline."""

    code = "stage_not_found"


class InvalidStateError(FlowmasonError):
    """The run is not in a state that allows this operation."""

    code = "invalid_state"


class RunConflictError(InvalidStateError):
    """Another operation changed the run first (two resumes, cancels or recoveries raced); this one lost."""

    code = "run_conflict"


class StartingError(FlowmasonError):
    """The daemon is still recovering runs after its start; state changes wait until health says ok."""

    code = "starting"


class PermissionDeniedError(FlowmasonError):
    """The peer's uid is not allowed to do this."""

    code = "permission_denied"


class LimitExceededError(FlowmasonError):
    """A configured size limit was exceeded; ``limit`` in the context names the setting."""

    code = "limit_exceeded"


class ShuttingDownError(FlowmasonError):
    """The daemon is shutting down and accepts no new work."""

    code = "shutting_down"


class ScheduleNotFoundError(FlowmasonError):
    """No schedule with that id."""

    code = "schedule_not_found"
