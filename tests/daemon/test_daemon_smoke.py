"""The daemon fixture itself: it starts, answers, and stops with exit status 0."""

from __future__ import annotations

import shutil

from typing import Callable

from daemon_support import EXAMPLES, DaemonProcess


def test_daemon_runs_an_example_pipeline_from_the_command(daemon_factory: Callable[..., DaemonProcess]) -> None:
    """`flowmason run etl --follow` against a real daemon ends succeeded with the ETL's output."""
    daemon = daemon_factory()
    shutil.copy(EXAMPLES / "etl.pipeline.json", daemon.pipelines / "etl.pipeline.json")
    daemon.start()
    result = daemon.cli("run", "etl", "--follow", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    final = [line for line in result.stdout.splitlines() if '"status"' in line and '"output"' in line][-1]
    assert '"succeeded"' in final and '"load_status": "success"' in final
    assert daemon.stop() == 0
