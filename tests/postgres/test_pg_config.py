"""[journal] settings of the PostgreSQL backend: dsn, dsn_file (a systemd credential), and their errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from psycopg.conninfo import conninfo_to_dict

from flowmasond.config import load_config
from flowmasond.errors import ConfigurationError


def _config(tmp_path: Path, journal: str) -> Path:
    path = tmp_path / "flowmasond.toml"
    path.write_text(f"[journal]\n{journal}\n")
    return path


def test_dsn_file_under_the_credentials_directory_holds_the_whole_dsn(tmp_path: Path) -> None:
    """dsn_file = "${CREDENTIALS_DIRECTORY}/flowmasond-dsn" reads the DSN from systemd's credential folder."""
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "flowmasond-dsn").write_text("host=db dbname=fm user=fm password=s3cret\n")
    config = load_config(_config(tmp_path, 'backend = "postgresql"\n'
                                           'dsn_file = "${CREDENTIALS_DIRECTORY}/flowmasond-dsn"'), env={})

    dsn = config.journal.resolve_dsn({"CREDENTIALS_DIRECTORY": str(creds)})

    assert dsn == "host=db dbname=fm user=fm password=s3cret"


def test_with_a_dsn_the_file_holds_only_the_password(tmp_path: Path) -> None:
    """dsn names the server; dsn_file's content becomes its password."""
    (tmp_path / "pw").write_text("p@ss word\n")
    config = load_config(_config(tmp_path, f'backend = "postgresql"\ndsn = "host=db dbname=fm"\n'
                                           f'dsn_file = "{tmp_path / "pw"}"'), env={})

    parts = conninfo_to_dict(config.journal.resolve_dsn({}))

    assert parts == {"host": "db", "dbname": "fm", "password": "p@ss word"}


def test_the_dsn_never_appears_in_the_configs_repr(tmp_path: Path) -> None:
    """A password in dsn stays out of logs that print the configuration."""
    config = load_config(_config(tmp_path, 'backend = "postgresql"\ndsn = "host=db password=s3cret"'), env={})
    assert "s3cret" not in repr(config)


@pytest.mark.parametrize("journal, field", [
    ('backend = "postgresql"', "journal.dsn"),
    ('dsn = "host=db"', "journal.backend"),
    ('backend = "mysql"', "journal.backend"),
])
def test_inconsistent_backend_settings_are_errors_naming_the_field(tmp_path: Path, journal: str, field: str) -> None:
    """postgresql without a dsn, a dsn for sqlite, an unknown backend: each error names the key."""
    with pytest.raises(ConfigurationError) as caught:
        load_config(_config(tmp_path, journal), env={})
    assert field in str(caught.value)


@pytest.mark.parametrize("dsn_file, problem", [
    ("${NOT_SET_ANYWHERE}/dsn", "NOT_SET_ANYWHERE"),
    ("MISSING", "cannot be read"),
    ("EMPTY", "is empty"),
])
def test_an_unusable_dsn_file_is_an_error_naming_the_field(tmp_path: Path, dsn_file: str, problem: str) -> None:
    """An unset variable, a missing file or an empty one: a configuration error naming journal.dsn_file."""
    (tmp_path / "empty").write_text("\n")
    path = dsn_file.replace("MISSING", str(tmp_path / "missing")).replace("EMPTY", str(tmp_path / "empty"))
    config = load_config(_config(tmp_path, f'backend = "postgresql"\ndsn_file = "{path}"'), env={})
    with pytest.raises(ConfigurationError) as caught:
        config.journal.resolve_dsn({})
    assert "journal.dsn_file" in str(caught.value) and problem in str(caught.value)
