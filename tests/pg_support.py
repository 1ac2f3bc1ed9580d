"""A throwaway PostgreSQL server for tests and benchmarks (fixtures in tests/conftest.py).

Debian's binaries (``/usr/lib/postgresql/<version>/bin``) run a private cluster whose data
directory and Unix socket live in one temporary folder; it listens on no TCP port. PostgreSQL
refuses to run as root, so when the tests run as root (CI does) the folder is handed to the
``postgres`` system user and ``initdb``/``pg_ctl`` run through ``runuser``. fsync stays on: the
durability tests must see the same commits a production server would make.
"""

from __future__ import annotations

import atexit
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PG_VERSION_PREFERRED = "15"
PG_USER = "postgres"  # the superuser initdb creates, and the system user the server runs as
PG_PORT = 5432  # names the socket file only: the server listens on no TCP address


def pg_bin_dir() -> Path:
    """The bin directory of the installed PostgreSQL (15 when present, else the newest)."""
    root = Path("/usr/lib/postgresql")
    preferred = root / PG_VERSION_PREFERRED / "bin"
    if (preferred / "initdb").exists():
        return preferred
    found = sorted((p for p in root.glob("*/bin") if (p / "initdb").exists()),
                   key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    if not found:
        raise RuntimeError("no PostgreSQL server binaries in /usr/lib/postgresql/*/bin: "
                           "install the Debian package `postgresql` (.ci/run does)")
    return found[-1]


@dataclass
class PgServer:
    """One private PostgreSQL cluster: ``start``/``stop``/``restart``, databases, DSNs."""

    root: Path
    bin_dir: Path = field(default_factory=pg_bin_dir)
    running: bool = False
    _shared: str | None = None

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "sock"

    @property
    def log_path(self) -> Path:
        return self.root / "server.log"

    @classmethod
    def create(cls, root: Path | None = None) -> PgServer:
        """initdb a new cluster in ``root`` (a new temporary folder by default); not started."""
        # Not under pytest's tmp_path: its parent is private to root, and the server runs as
        # the postgres user, which must reach the folder.
        root = Path(root) if root is not None else Path(tempfile.mkdtemp(prefix="flowmason-pg-"))
        server = cls(root=root)
        server.socket_dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            entry = pwd.getpwnam(PG_USER)
            for path in (root, server.socket_dir):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        # --no-sync only skips initdb's own flush of the template files (a throwaway cluster);
        # the server itself runs with fsync on.
        server._run("initdb", "-D", str(server.data_dir), "-U", PG_USER, "--auth=trust",
                    "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions")
        return server

    def dsn(self, dbname: str = "postgres", schema: str | None = None) -> str:
        """A libpq connection string for ``dbname`` (tables in ``schema`` when given) on this server's socket."""
        dsn = f"host={self.socket_dir} port={PG_PORT} user={PG_USER} dbname={dbname}"
        return dsn if schema is None else f"{dsn} options='-c search_path={schema}'"

    def shared_database(self) -> str:
        """One database for tests that each take a schema in it (created on first use, never dropped:
        dropping a database forces a checkpoint, seconds on a busy disk)."""
        if self._shared is None:
            self._shared = self.create_database("shared")
        return self._shared

    def drop_schema(self, dbname: str, schema: str) -> None:
        import psycopg

        with psycopg.connect(self.dsn(dbname), autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'.encode())

    def create_schema(self, dbname: str) -> str:
        """A new empty schema in ``dbname`` (much cheaper than a database); returns its name."""
        import psycopg

        name = f"s_{uuid.uuid4().hex[:16]}"
        with psycopg.connect(self.dsn(dbname), autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{name}"'.encode())
        return name

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = (f"-c listen_addresses='' -k {self.socket_dir} -p {PG_PORT} -c fsync=on "
                   "-c synchronous_commit=on -c max_connections=200 -c shared_buffers=32MB")
        self._run("pg_ctl", "start", "-w", "-t", "60", "-D", str(self.data_dir),
                  "-l", str(self.log_path), "-o", options)
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: disconnect clients and shut down cleanly; ``immediate``: crash-like)."""
        if not self.running:
            return
        self._run("pg_ctl", "stop", "-w", "-t", "60", "-D", str(self.data_dir), "-m", mode)
        self.running = False

    def restart(self, mode: str = "fast") -> None:
        """Stop and start again (every client connection is dropped; committed data stays)."""
        self.stop(mode)
        self.start()

    def create_database(self, name: str | None = None) -> str:
        """A new empty database; returns its name."""
        name = name or f"t_{uuid.uuid4().hex[:16]}"
        self._sql(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        """Drop ``name``, disconnecting whoever is still on it."""
        self._sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def destroy(self) -> None:
        """Stop the server at once and delete its folder."""
        with suppress(Exception):
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _sql(self, statement: str) -> None:
        import psycopg

        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(statement.encode())

    def _run(self, program: str, *args: str) -> None:
        command = [str(self.bin_dir / program), *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", PG_USER, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd="/")
        if done.returncode != 0:
            raise RuntimeError(f"{program} failed ({done.returncode}): {done.stderr or done.stdout}"
                               f"\n{self.log()[-2000:]}")


def start_server() -> PgServer:
    """Create and start a throwaway server; it is destroyed at interpreter exit at the latest."""
    server = PgServer.create()
    atexit.register(server.destroy)
    try:
        server.start()
    except BaseException:
        server.destroy()
        raise
    return server


class CommitDropProxy:
    """A Unix-socket relay in front of a server that can cut one session around its next COMMIT.

    ``arm("before")``: the next COMMIT is swallowed and the session cut (the server rolls back);
    ``arm("after")``: the COMMIT reaches the server, which commits, and the session is cut before
    its answer comes back: the client cannot know the outcome. Everything else is relayed as is.
    Runs on the caller's event loop; ``dsn(dbname)`` connects through it.
    """

    def __init__(self, server: PgServer) -> None:
        self.server = server
        self.root = Path(tempfile.mkdtemp(prefix="flowmason-pgproxy-"))
        self.mode: str | None = None
        self.cuts = 0
        self._listener: Any = None

    def dsn(self, dbname: str) -> str:
        return f"host={self.root} port={PG_PORT} user={PG_USER} dbname={dbname}"

    def arm(self, mode: str) -> None:
        assert mode in ("before", "after")
        self.mode = mode

    async def start(self) -> None:
        import asyncio

        self._listener = await asyncio.start_unix_server(self._relay, path=str(self.root / f".s.PGSQL.{PG_PORT}"))

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.close()
        shutil.rmtree(self.root, ignore_errors=True)

    async def _relay(self, client_r: Any, client_w: Any) -> None:
        import asyncio

        server_r, server_w = await asyncio.open_unix_connection(str(self.server.socket_dir / f".s.PGSQL.{PG_PORT}"))
        commit_sent = asyncio.Event()

        def cut() -> None:
            self.cuts += 1
            client_w.close()
            server_w.close()

        async def upstream() -> None:
            while data := await client_r.read(65536):
                if self.mode is not None and b"COMMIT\x00" in data:
                    mode, self.mode = self.mode, None
                    if mode == "before":
                        cut()
                        return
                    commit_sent.set()
                server_w.write(data)
                await server_w.drain()
            server_w.close()

        async def downstream() -> None:
            while data := await server_r.read(65536):
                if commit_sent.is_set():
                    cut()
                    return
                client_w.write(data)
                await client_w.drain()
            client_w.close()

        await asyncio.gather(upstream(), downstream(), return_exceptions=True)
