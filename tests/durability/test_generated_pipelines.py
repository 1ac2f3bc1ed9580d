"""Generated nested pipelines, SIGKILLed at journal commit boundaries, against an uninterrupted run (issue 11).

hypothesis builds random pipelines (gen_pipelines.py); for each, gen_runner.py runs it once without
interruption (the oracle), then, for each chosen commit k, kills a fresh run of it right after commit k
and recovers it in a new process; gen_checks.py lists every difference from the oracle. The default
profile samples a few kill points from each of 200 pipelines; ``--slow`` tries every kill point of
many more. Shrunk pipelines that once diverged are replayed at every kill point from
pipelines/generated/.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from gen_support import GEN_STATS, GenRunner
from gen_checks import check_case
from gen_pipelines import cases
from pg_support import PgServer

REGRESSIONS = Path(__file__).parent / "pipelines" / "generated"
CI_PIPELINES, CI_KILL_POINTS = 200, 3
SLOW_PIPELINES = 1500
# The PostgreSQL journal: a smaller sample in CI (each commit is a server round trip and an fsync).
PG_CI_PIPELINES, PG_SLOW_PIPELINES = 10, 300

_SETTINGS = dict(deadline=None, suppress_health_check=list(HealthCheck), print_blob=True)


def _verify(gen_runner: GenRunner, base: Path, case: dict[str, Any], kill_points: int | str,
            pg_dsn: str | None = None) -> None:
    digest = hashlib.sha256(json.dumps(case, sort_keys=True).encode()).hexdigest()[:12]
    case_dir = base / digest
    # hypothesis replays a failing case to report it: a rerun must not land on the first try's journal.
    shutil.rmtree(case_dir, ignore_errors=True)
    answer = gen_runner.run_case(case_dir, case, kill_points, seed=int(digest, 16), pg_dsn=pg_dsn)
    problems = check_case(answer)
    if problems:
        GEN_STATS["divergent_pipelines"] += 1
        (case_dir / "case.json").write_text(json.dumps(case, indent=1))
    else:
        shutil.rmtree(case_dir, ignore_errors=True)
    assert not problems, f"case kept in {case_dir}: {json.dumps(problems, indent=1)}"


@settings(max_examples=CI_PIPELINES, **_SETTINGS)
@given(case=cases())
def test_generated_pipelines_killed_at_sampled_commits_recover_like_the_uninterrupted_run(
        case: dict[str, Any], gen_runner: GenRunner, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Killed after a sampled journal commit and recovered, every generated pipeline ends with the
    oracle's status, output and stage statuses, a sound journal, and no committed stage run again."""
    _verify(gen_runner, tmp_path_factory.getbasetemp() / "gen-ci", case, CI_KILL_POINTS)


@pytest.fixture(scope="module")
def gen_pg_dsn(pg_server: PgServer) -> str:
    """One database for the PostgreSQL variant; each run directory journals to its own schema in it."""
    return pg_server.dsn(pg_server.create_database())


@settings(max_examples=PG_CI_PIPELINES, **_SETTINGS)
@given(case=cases())
def test_generated_pipelines_on_postgresql_killed_at_sampled_commits_recover_like_the_uninterrupted_run(
        case: dict[str, Any], gen_runner: GenRunner, gen_pg_dsn: str,
        tmp_path_factory: pytest.TempPathFactory) -> None:
    """The same oracle comparison with every run journaled to PostgreSQL (a SIGKILL after a sampled commit)."""
    _verify(gen_runner, tmp_path_factory.getbasetemp() / "gen-pg-ci", case, CI_KILL_POINTS, pg_dsn=gen_pg_dsn)


@pytest.mark.slow
@settings(max_examples=PG_SLOW_PIPELINES, **_SETTINGS)
@given(case=cases())
def test_generated_pipelines_on_postgresql_killed_at_every_commit_recover_like_the_uninterrupted_run(
        case: dict[str, Any], gen_runner: GenRunner, gen_pg_dsn: str, tmp_path_factory: pytest.TempPathFactory,
        request: pytest.FixtureRequest) -> None:
    """The --slow PostgreSQL profile: every commit boundary of every generated pipeline is a kill point."""
    if not request.config.getoption("--slow"):
        pytest.skip("the every-commit profile runs with --slow")
    _verify(gen_runner, tmp_path_factory.getbasetemp() / "gen-pg-slow", case, "all", pg_dsn=gen_pg_dsn)


@pytest.mark.slow
@settings(max_examples=SLOW_PIPELINES, **_SETTINGS)
@given(case=cases())
def test_generated_pipelines_killed_at_every_commit_recover_like_the_uninterrupted_run(
        case: dict[str, Any], gen_runner: GenRunner, tmp_path_factory: pytest.TempPathFactory,
        request: pytest.FixtureRequest) -> None:
    """The --slow profile: every commit boundary of every generated pipeline is a kill point."""
    if not request.config.getoption("--slow"):
        pytest.skip("the every-commit profile runs with --slow")
    _verify(gen_runner, tmp_path_factory.getbasetemp() / "gen-slow", case, "all")


@pytest.mark.parametrize("path", sorted(REGRESSIONS.glob("*.json")), ids=lambda p: p.stem)
def test_a_pipeline_that_once_diverged_recovers_at_every_commit(
        path: Path, gen_runner: GenRunner, tmp_path: Path) -> None:
    """A shrunk generated pipeline that diverged before its fix, replayed at every kill point."""
    case = json.loads(path.read_text())
    _verify(gen_runner, tmp_path, {"root": case["root"], "pipelines": case["pipelines"]}, "all")
