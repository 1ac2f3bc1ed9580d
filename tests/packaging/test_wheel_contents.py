"""The wheel ships the top-level state/ directory as the package flowmasond.state."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_a_built_wheel_holds_every_file_of_state_as_flowmasond_state(tmp_path: Path) -> None:
    """`pip wheel .` puts every migration, query file and the contract README under flowmasond/state/."""
    # Built from a copy: pip builds a local directory in place and would leave build/ behind.
    source = tmp_path / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
        ".git", ".*venv*", "build", "*.egg-info", "__pycache__", ".hypothesis", ".pytest_cache"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir",
                    str(tmp_path / "dist"), str(source)], check=True, capture_output=True, text=True, timeout=300)
    [wheel] = (tmp_path / "dist").glob("flowmasond-*.whl")

    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())

    expected = {"flowmasond/state/" + p.relative_to(REPO / "state").as_posix()
                for p in (REPO / "state").rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    assert {"flowmasond/state/migrations/0001_initial.sql", "flowmasond/state/README.md"} <= expected
    assert expected <= names
    assert {"flowmasond/py.typed", "flowmason_client/py.typed", "flowmasond/engine/interfaces.py"} <= names
