"""Semantic validation of a pipeline: the cross-stage rules pydantic cannot express.

Every rule appends a ``ValidationIssue`` naming the file, the stage and the field instead of
raising, so that one pass reports every problem of a file (DESIGN.md "Pipeline file").
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator, Sequence
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AliasChoices, BaseModel, ValidationError

from flowmasond.components.control_flow_components import child_stage_ids
from flowmasond.engine.models import RESERVED_STAGE_IDS, PipelineConfig, ScheduleConfig, StageConfig
from flowmasond.engine.registry import ComponentMeta, ComponentRegistry
from flowmasond.engine.templates import ROOTS, TemplateRef, contains_template, is_template, walk_references
from flowmasond.errors import ValidationIssue
from flowmasond.pipelines.compat import flowmason_ignored_keys

# '.' separates template segments and '/' stage-path segments ('loop/3/transform'); braces and
# whitespace would make `{{upstream.<id>}}` unparseable.
_BAD_ID_CHARS = re.compile(r"[./{}\s]")
# How many known names an "unknown ..." message lists when no close match exists.
_NAMES_SHOWN = 15


def validate_pipeline(config: PipelineConfig, registry: ComponentRegistry, file: str | None = None, *,
                      unparsed_stage_ids: Collection[str] = ()) -> list[ValidationIssue]:
    """Every semantic problem of ``config``; an empty list means it is valid.

    ``unparsed_stage_ids`` are ids of stages that failed structural validation (so their own
    problems are already reported): references to them are not reported a second time.
    """
    return _Validator(config, registry, file, unparsed_stage_ids).run()


class _Validator:
    """One validation pass over one pipeline; each ``_check_*`` method is one group of rules."""

    def __init__(self, config: PipelineConfig, registry: ComponentRegistry, file: str | None,
                 unparsed_stage_ids: Collection[str]) -> None:
        self.config = config
        self.registry = registry
        self.file = file
        self.stages: list[StageConfig] = list(config.stages)
        self.ids: set[str] = {s.id for s in self.stages} | set(unparsed_stage_ids)
        # Each stage's first occurrence: duplicates are reported once and then ignored.
        self.by_id: dict[str, StageConfig] = {}
        for stage in self.stages:
            self.by_id.setdefault(stage.id, stage)
        self.owner: dict[str, str] = {}  # child stage id -> the control-flow stage that runs it
        self.issues: list[ValidationIssue] = []

    def run(self) -> list[ValidationIssue]:
        self._check_ids()
        self._check_components()
        self._check_depends_on()
        self._check_cycles()
        self._check_control_flow()
        self._check_templates()
        self._check_output_stage()
        self.issues.extend(_check_schedules(self.config.schedules, self.file))
        return sort_issues(self.issues, [s.id for s in self.stages])

    def _add(self, message: str, *, stage: str | None = None, field: str | None = None,
             severity: str = "error") -> None:
        self.issues.append(ValidationIssue(message, file=self.file, stage=stage, field=field,
                                           severity=severity))

    # -- ids and components -------------------------------------------------------------------

    def _check_ids(self) -> None:
        first_index: dict[str, int] = {}
        for index, stage in enumerate(self.stages):
            if stage.id in first_index:
                self._add(f"duplicate stage id '{stage.id}' (also used by stages[{first_index[stage.id]}])",
                          stage=stage.id, field="id")
            else:
                first_index[stage.id] = index
            if stage.id in RESERVED_STAGE_IDS:
                self._add(f"stage id '{stage.id}' is reserved: it is a template root "
                          f"({{{{{stage.id}...}}}}); rename the stage", stage=stage.id, field="id")
            if _BAD_ID_CHARS.search(stage.id):
                self._add(f"stage id '{stage.id}' must not contain '.', '/', braces or whitespace "
                          "(they separate template and stage-path segments)", stage=stage.id, field="id")

    def _check_components(self) -> None:
        for stage in self.stages:
            if stage.component_type not in self.registry:
                self._add(f"unknown component type '{stage.component_type}'"
                          f"{did_you_mean(stage.component_type, self.registry.names(), 'known types')}",
                          stage=stage.id, field="component_type")
                continue
            meta = self.registry.meta(stage.component_type)
            if meta.kind != "node":
                for name in ("provider", "llm_settings"):
                    if getattr(stage, name) is not None:
                        self._add(f"'{name}' is only allowed on LLM node components; "
                                  f"'{meta.name}' is a {meta.kind.replace('_', '-')} component",
                                  stage=stage.id, field=name)
            elif stage.llm_settings:
                self._check_llm_settings(stage)
            if meta.kind == "control_flow" and stage.distribute:
                self._add(f"'distribute' applies to leaf stages only: '{meta.name}' is a control-flow "
                          "component and always runs on the run's owner (set it on the stages it runs)",
                          stage=stage.id, field="distribute")
            self._check_config(stage, meta)

    def _check_llm_settings(self, stage: StageConfig) -> None:
        # Templated values are only known at run time (the node validates them then); keys and
        # literal values are checked now, so a typo does not wait for the first LLM call.
        # Imported here, as the schedule and suggestion helpers below are: a pipeline without LLM
        # settings, schedules or mistakes does not import them (issue 15's cold start).
        from flowmasond.components.llm.settings import LLMSettings

        settings = stage.llm_settings or {}
        known = sorted(LLMSettings.model_fields)
        literal: dict[str, Any] = {}
        for key, value in settings.items():
            if key not in LLMSettings.model_fields:
                self._add(f"unknown llm_settings key '{key}'{did_you_mean(key, known, 'accepted keys')}",
                          stage=stage.id, field=f"llm_settings.{key}")
            elif not contains_template(value):
                literal[key] = value
        try:
            LLMSettings.model_validate(literal)
        except ValidationError as exc:
            for error in exc.errors():
                where = ".".join(str(part) for part in error["loc"])
                self._add(f"llm_settings.{where}: {error['msg']}", stage=stage.id,
                          field=f"llm_settings.{where}")

    def _check_config(self, stage: StageConfig, meta: ComponentMeta) -> None:
        model = meta.input_model
        accepted = accepted_keys(model)
        forbids_extra = model.model_config.get("extra") != "allow"
        checkable: dict[str, Any] = {}
        templated: set[str] = set()
        for key, value in stage.config.items():
            if key not in accepted:
                if forbids_extra:
                    # FlowMason ignores config keys its components do not take; a key it defines
                    # that flowmasond does not is dropped quietly, any other one is a warning.
                    if key not in flowmason_ignored_keys(meta.name):
                        self._add(f"unknown config key '{key}' for component '{meta.name}' is ignored"
                                  f"{did_you_mean(key, sorted(accepted), 'accepted keys')}",
                                  stage=stage.id, field=f"config.{key}", severity="warning")
                    continue
            if contains_template(value):
                # Its value is only known at run time; the engine validates it then.
                templated.add(key)
                templated.add(_field_of_alias(model, key))
            else:
                checkable[key] = value
        try:
            model.model_validate(checkable)
        except ValidationError as exc:
            for error in exc.errors(include_url=False):
                loc = error["loc"]
                top = str(loc[0]) if loc else None
                if top is None and templated:
                    continue  # a whole-model rule may depend on a value we could not see
                if error["type"] == "missing":
                    if top in templated:
                        continue
                    message = f"missing required config key '{top}' for component '{meta.name}'"
                else:
                    message = describe_pydantic_error(error)
                field = ".".join(["config", *(str(p) for p in loc)])
                self._add(message, stage=stage.id, field=field)

    # -- the dependency graph -----------------------------------------------------------------

    def _check_depends_on(self) -> None:
        for stage in self.stages:
            for dep in stage.depends_on:
                if dep not in self.ids:
                    self._add(f"depends on unknown stage '{dep}'{did_you_mean(dep, sorted(self.ids), 'stages')}",
                              stage=stage.id, field="depends_on")

    def _check_cycles(self) -> None:
        order = {sid: i for i, sid in enumerate(self.by_id)}
        edges = {sid: [d for d in s.depends_on if d in self.by_id] for sid, s in self.by_id.items()}
        state: dict[str, int] = {}  # absent: unvisited, 1: on the current path, 2: done
        reported: set[frozenset[str]] = set()
        for start in self.by_id:
            if start in state:
                continue
            path: list[str] = [start]
            pending: list[Iterator[str]] = [iter(edges[start])]
            state[start] = 1
            # Iterative DFS: pipelines may be deep enough to hit Python's recursion limit.
            while pending:
                nxt = next(pending[-1], None)
                if nxt is None:
                    state[path.pop()] = 2
                    pending.pop()
                elif state.get(nxt) == 1:
                    cycle = path[path.index(nxt):]
                    if frozenset(cycle) not in reported:
                        reported.add(frozenset(cycle))
                        self._report_cycle(cycle, order)
                elif nxt not in state:
                    state[nxt] = 1
                    path.append(nxt)
                    pending.append(iter(edges[nxt]))

    def _report_cycle(self, cycle: list[str], order: dict[str, int]) -> None:
        # Start at the stage written first in the file, so the message is stable.
        first = min(range(len(cycle)), key=lambda i: order[cycle[i]])
        ring = cycle[first:] + cycle[:first]
        shown = " -> ".join([*ring, ring[0]])
        self._add(f"dependency cycle: {shown} (each stage depends on the next)", stage=ring[0],
                  field="depends_on")

    # -- control flow -------------------------------------------------------------------------

    def _check_control_flow(self) -> None:
        children: list[tuple[StageConfig, str, str]] = []  # (control-flow stage, field, child id)
        for stage in self.stages:
            for field, ids in child_stage_ids(stage.component_type, stage.config).items():
                for child in ids:
                    children.append((stage, field, child))
                    if child == stage.id:
                        self._add(f"config.{field} lists the stage itself", stage=stage.id,
                                  field=f"config.{field}")
                    elif child not in self.ids:
                        self._add(f"config.{field} names unknown stage '{child}'"
                                  f"{did_you_mean(child, sorted(self.ids), 'stages')}",
                                  stage=stage.id, field=f"config.{field}")
                    elif self.owner.setdefault(child, stage.id) != stage.id:
                        self._add(f"stage '{child}' already runs under control-flow stage "
                                  f"'{self.owner[child]}'; a stage can belong to only one",
                                  stage=stage.id, field=f"config.{field}")
            if stage.component_type == "router":
                self._check_default_route(stage)
        reported: set[frozenset[str]] = set()
        for stage, field, child in children:
            chain = self._ancestors(stage.id)
            if child != stage.id and child in chain:
                loop = frozenset([*chain[:chain.index(child) + 1], stage.id])
                if loop not in reported:
                    reported.add(loop)
                    self._add(f"config.{field} lists '{child}', which is an ancestor of this stage "
                              f"(it already runs '{stage.id}' under it)", stage=stage.id,
                              field=f"config.{field}")

    def _check_default_route(self, stage: StageConfig) -> None:
        default, routes = stage.config.get("default_route"), stage.config.get("routes")
        if isinstance(default, str) and not is_template(default) and isinstance(routes, dict) \
                and default not in routes:
            self._add(f"default_route '{default}' is not a route key"
                      f"{did_you_mean(default, sorted(map(str, routes)), 'routes')}",
                      stage=stage.id, field="config.default_route")

    def _ancestors(self, stage_id: str) -> list[str]:
        """The control-flow stages enclosing ``stage_id``, innermost first (cycle-safe)."""
        chain: list[str] = []
        current = self.owner.get(stage_id)
        while current is not None and current not in chain and current != stage_id:
            chain.append(current)
            current = self.owner.get(current)
        return chain

    def _loop_names(self, stage_id: str) -> set[str]:
        """Bare names an expression inside foreach/trycatch may read (loop variables, the error)."""
        names = {"item", "index", "loop_item", "loop_index", "error"}
        for ancestor in self._ancestors(stage_id):
            owner_stage = self.by_id.get(ancestor)
            if owner_stage is not None and owner_stage.component_type == "foreach":
                for key in ("item_variable", "index_variable"):
                    if isinstance(owner_stage.config.get(key), str):
                        names.add(owner_stage.config[key])
        return names

    def _outside_loop(self, reader: str, target: str) -> str | None:
        """The outermost foreach that runs ``target`` per item but does not enclose ``reader``."""
        reader_scope = set(self._ancestors(reader))
        found = None
        for ancestor in self._ancestors(target):
            owner_stage = self.by_id.get(ancestor)
            if owner_stage is not None and owner_stage.component_type == "foreach" \
                    and ancestor not in reader_scope:
                found = ancestor
        return found

    # -- templates and references -------------------------------------------------------------

    def _check_templates(self) -> None:
        for stage in self.stages:
            deferred = self.registry.meta(stage.component_type).deferred_template_roots \
                if stage.component_type in self.registry else frozenset()
            for root_field in ("config", "llm_settings"):
                value = getattr(stage, root_field)
                if value is None:
                    continue
                for where, ref in walk_references(value, (root_field,)):
                    if root_field == "config" and (ref.root in deferred or ref.names & deferred):
                        continue  # evaluated by the component itself
                    self._check_ref(stage, ".".join(map(str, where)), ref)
            for dep in stage.depends_on:
                loop = self._outside_loop(stage.id, dep) if dep in self.by_id else None
                if loop is not None:
                    self._add(f"depends on '{dep}', which runs inside foreach '{loop}' once per item; "
                              f"depend on '{loop}' instead", stage=stage.id, field="depends_on")

    def _check_ref(self, stage: StageConfig, field: str, ref: TemplateRef) -> None:
        if ref.kind == "expr":
            known = set(ROOTS) | self.ids | self._loop_names(stage.id)
            for name in sorted(ref.names - known):
                self._add(f"{ref.text}: unknown name '{name}' (expressions read input, upstream, env, "
                          f"context, <stage>.output and functions such as now(), len())"
                          f"{did_you_mean(name, sorted(known), 'names')}", stage=stage.id, field=field)
            assert ref.expression is not None
            for missing in sorted(ref.expression.stages - self.ids):
                self._add(f"{ref.text} names unknown stage '{missing}'"
                          f"{did_you_mean(missing, sorted(self.ids), 'stages')}", stage=stage.id, field=field)
            return
        if ref.kind == "invalid":
            hint = ""
            if ref.root in self.ids:
                hint = (f"; to read stage '{ref.root}' write {{{{upstream.{ref.root}.<field>}}}} "
                        f"or {{{{{ref.root}.output.<field>}}}}")
            self._add(f"{ref.text}: {ref.error}{hint}", stage=stage.id, field=field)
            return
        target = ref.stage
        if target is None:
            return
        if target not in self.ids:
            self._add(f"{ref.text} names unknown stage '{target}'"
                      f"{did_you_mean(target, sorted(self.ids), 'stages')}", stage=stage.id, field=field)
        elif target == stage.id:
            self._add(f"{ref.text} reads this stage's own output, which does not exist yet",
                      stage=stage.id, field=field)
        else:
            loop = self._outside_loop(stage.id, target)
            if loop is not None:
                self._add(f"{ref.text} reads stage '{target}', which runs inside foreach '{loop}' "
                          f"once per item; use {{{{upstream.{loop}.results}}}} instead",
                          stage=stage.id, field=field)

    def _check_output_stage(self) -> None:
        target = self.config.output_stage_id
        if target is None:
            return
        if target not in self.ids:
            self._add(f"output_stage_id names unknown stage '{target}'"
                      f"{did_you_mean(target, sorted(self.ids), 'stages')}", field="output_stage_id")
            return
        loop = self._outside_loop("", target)
        if loop is not None:
            self._add(f"output_stage_id '{target}' runs inside foreach '{loop}' once per item; "
                      f"use '{loop}' instead", field="output_stage_id")


def _check_schedules(schedules: Sequence[ScheduleConfig], file: str | None) -> list[ValidationIssue]:
    """Schedule rules: unique ids, known time zones, and cron expressions that parse and fire.

    A bad ``cron`` is reported here, with the rest of the file's problems, so that a file the
    scheduler could not run never replaces the version in force.
    """
    if not schedules:
        return []
    from flowmasond.scheduling.cron import cron_problem

    issues: list[ValidationIssue] = []
    seen: set[str] = set()
    for index, schedule in enumerate(schedules):
        if schedule.id in seen:
            issues.append(ValidationIssue(f"duplicate schedule id '{schedule.id}'", file=file,
                                          field=f"schedules.{index}.id"))
        seen.add(schedule.id)
        try:
            ZoneInfo(schedule.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            issues.append(ValidationIssue(
                f"unknown time zone '{schedule.timezone}' in schedule '{schedule.id}' "
                "(use an IANA name such as 'UTC' or 'Europe/Paris')",
                file=file, field=f"schedules.{index}.timezone"))
            continue
        problem = cron_problem(schedule.cron, schedule.timezone)
        if problem is not None:
            issues.append(ValidationIssue(f"invalid cron '{schedule.cron}' in schedule '{schedule.id}': {problem}",
                                          file=file, field=f"schedules.{index}.cron"))
    return issues


# -- helpers shared with the loader ---------------------------------------------------------------


def sort_issues(issues: list[ValidationIssue], stage_order: Sequence[str]) -> list[ValidationIssue]:
    """Issues grouped by stage in file order, then pipeline-level ones; stable within a stage."""
    position: dict[str, int] = {}
    for index, stage_id in enumerate(stage_order):
        position.setdefault(stage_id, index)
        position.setdefault(f"stages[{index}]", index)
    last = len(stage_order)
    return sorted(issues, key=lambda issue: position.get(issue.stage, last) if issue.stage else last)


def accepted_keys(model: type[BaseModel]) -> set[str]:
    """Config keys a component's Input model takes: field names and their aliases."""
    keys: set[str] = set()
    for name, info in model.model_fields.items():
        keys.add(name)
        if info.alias:
            keys.add(info.alias)
        alias = info.validation_alias
        if isinstance(alias, str):
            keys.add(alias)
        elif isinstance(alias, AliasChoices):
            keys.update(choice for choice in alias.choices if isinstance(choice, str))
    return keys


def _field_of_alias(model: type[BaseModel], key: str) -> str:
    """The field a config key sets (``options`` -> ``candidates``), or the key itself."""
    for name, info in model.model_fields.items():
        alias = info.validation_alias
        if key == info.alias or key == alias or (isinstance(alias, AliasChoices) and key in alias.choices):
            return name
    return key


def describe_pydantic_error(error: Any) -> str:
    """A pydantic error as one readable sentence, with the offending value when it is short."""
    kind, message = error["type"], str(error["msg"])
    if kind == "missing":
        return "required field is missing"
    if message.startswith("Value error, "):
        message = message[len("Value error, "):]
    value = error.get("input")
    if isinstance(value, (str, int, float, bool)) or value is None:
        shown = repr(value)
        if len(shown) <= 60:
            message += f" (got {shown})"
    return message


def did_you_mean(name: str, known: Sequence[str], what: str) -> str:
    """' (did you mean ...?)' for close matches, else a short list of what exists."""
    import difflib

    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    if close:
        return " (did you mean " + " or ".join(f"'{c}'" for c in close) + "?)"
    if not known:
        return ""
    shown = ", ".join(known[:_NAMES_SHOWN])
    more = f", ... ({len(known)} in all)" if len(known) > _NAMES_SHOWN else ""
    return f" ({what}: {shown}{more})"
