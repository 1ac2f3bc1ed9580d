"""Daemon configuration: TOML file < environment < command-line flags, validated with pydantic.

Where things live by default:
- under systemd (``STATE_DIRECTORY`` etc. set by the unit): ``/var/lib/flowmason``, ``/run/flowmason``,
  ``/etc/flowmason`` (config ``/etc/flowmason/flowmasond.toml``, pipelines ``/etc/flowmason/pipelines``);
- for a plain user: ``$XDG_STATE_HOME/flowmason`` (``~/.local/state/flowmason``), the socket where
  ``flowmason_client.paths.default_socket_path`` says, pipelines ``$XDG_CONFIG_HOME/flowmason/pipelines``.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from flowmason_client.paths import default_socket_path
from flowmasond.environment import DEFAULT_ENV_ALLOW
from flowmasond.errors import ConfigurationError

SYSTEM_CONFIG = Path("/etc/flowmason/flowmasond.toml")


class JournalConfig(BaseModel):
    """The journal: SQLite in the state directory (default), or a PostgreSQL database (several nodes
    share one with ``[cluster]``)."""

    model_config = ConfigDict(extra="forbid")

    backend: Literal["sqlite", "postgresql"] = "sqlite"
    synchronous: Literal["FULL", "NORMAL"] = "FULL"  # SQLite only
    retention_days: float | None = Field(default=30, gt=0)  # None keeps finished runs forever
    busy_timeout_ms: int = Field(default=5000, ge=0)  # SQLite only
    # PostgreSQL: a libpq connection string or URI. repr=False: it may hold a password.
    dsn: str | None = Field(default=None, repr=False)
    # PostgreSQL: a file holding the DSN, or only the password when `dsn` is set too (a systemd
    # credential: "${CREDENTIALS_DIRECTORY}/flowmasond-dsn"; $VARIABLES are expanded when read).
    dsn_file: str | None = None
    # PostgreSQL: how long a lost connection is retried before a write fails.
    reconnect_timeout_s: float = Field(default=60.0, gt=0)

    @model_validator(mode="after")
    def _backend_settings(self) -> JournalConfig:
        if self.backend == "postgresql" and not (self.dsn or self.dsn_file):
            raise ValueError("journal.backend = \"postgresql\" needs journal.dsn or journal.dsn_file")
        if self.backend == "sqlite" and (self.dsn or self.dsn_file):
            raise ValueError("journal.dsn and journal.dsn_file apply only to journal.backend = \"postgresql\"")
        return self

    def resolve_dsn(self, env: dict[str, str] | None = None) -> str:
        """The PostgreSQL DSN: ``dsn``, ``dsn_file``'s content, or ``dsn`` with the file's password."""
        if not self.dsn_file:
            return self.dsn or ""
        environ = dict(os.environ if env is None else env)
        path = _expand(self.dsn_file, environ)
        try:
            secret = Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigurationError(f"journal.dsn_file cannot be read: {exc.strerror}", field="journal.dsn_file",
                                     file=path) from None
        if not secret:
            raise ConfigurationError("journal.dsn_file is empty", field="journal.dsn_file", file=path)
        if not self.dsn:
            return secret
        from psycopg.conninfo import make_conninfo

        return make_conninfo(self.dsn, password=secret)


class SchedulerConfig(BaseModel):
    """Cron schedules."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    max_catchup_runs: int = Field(default=10, ge=1)  # bound on misfire=run_all after downtime


class ClusterConfig(BaseModel):
    """Several nodes on one PostgreSQL journal (flowmasond.cluster); off by default."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    # Default: "<hostname>-<6 hex digits>", made once and kept in <state dir>/node_id.
    node_id: str | None = Field(default=None, min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._:-]+$")
    # A node that has not renewed its leases for this long loses its runs to the other nodes.
    lease_seconds: float = Field(default=15.0, gt=0)
    # How often a node renews its leases, takes cancel requests and claims runs needing an owner.
    heartbeat_seconds: float = Field(default=5.0, gt=0)
    # Stage workers of this node: how many distributed leaf stages (`distribute` in a pipeline)
    # of any node's runs it executes at once; 0: it only hands its own out.
    stage_workers: int = Field(default=4, ge=0, le=256)

    @model_validator(mode="after")
    def _heartbeat_below_lease(self) -> ClusterConfig:
        # Two missed heartbeats must not lose a lease, or a busy node would drop its runs.
        if self.heartbeat_seconds * 2 > self.lease_seconds:
            raise ValueError("heartbeat_seconds must be at most half of lease_seconds")
        return self


class LimitsConfig(BaseModel):
    """Sizes a pipeline file, a client or a stage may not exceed; each error names its limit."""

    model_config = ConfigDict(extra="forbid")

    # A pipeline file is a few KB; 1 MiB leaves room for large prompts and keeps a stray 150 MB
    # file from being parsed (and held, and sent in every `pipelines` reply).
    max_pipeline_file_bytes: int = Field(default=1 << 20, ge=1024)
    # Real pipelines nest a few levels (stages > config > a JSON value); 64 is far beyond, and far
    # below what recursive code (pydantic, our walkers) can take without RecursionError.
    max_json_depth: int = Field(default=64, ge=8, le=500)
    # The inputs of `runs.start`, as JSON; they are journaled with the run and sent in replies.
    max_run_input_bytes: int = Field(default=1 << 20, ge=1024)
    # One stage's output as stored in the journal (JSON); a bigger output fails the stage. 8 MiB
    # keeps `runs.output` of any stored output under the client's 64 MiB reply cap even when
    # every character needs a six-byte JSON escape.
    max_stage_output_bytes: int = Field(default=8 << 20, ge=1024)
    # How much of each stage output `runs.show` includes, of all its outputs together, and how
    # many stage rows (a loop makes thousands); `runs.output` fetches any one output in full.
    max_show_output_bytes: int = Field(default=64 << 10, ge=256)
    max_show_bytes: int = Field(default=4 << 20, ge=1024)
    max_show_stages: int = Field(default=10_000, ge=10)
    # Events per `runs.events` page; the client follows `next_after_id` for the rest.
    events_page_size: int = Field(default=1000, ge=10, le=10000)
    # Socket connections: per peer uid, in all, and how many of them only root and allowed_uids get.
    max_connections: int = Field(default=256, ge=8)
    max_connections_per_uid: int = Field(default=32, ge=1)
    reserved_privileged_connections: int = Field(default=16, ge=1)
    # A request line must arrive in full within this time once its first byte did.
    line_timeout_s: float = Field(default=10.0, gt=0)

    @model_validator(mode="after")
    def _reserve_below_total(self) -> LimitsConfig:
        if self.reserved_privileged_connections >= self.max_connections:
            raise ValueError("reserved_privileged_connections must be below max_connections")
        return self
def parse_listen(value: str) -> tuple[str, int]:
    """``"127.0.0.1:9464"`` or ``"[::1]:9464"`` as (host, port); ValueError says what is wrong."""
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"must be HOST:PORT, e.g. \"127.0.0.1:9464\" (got {value!r})")
    return host, int(port)


class MetricsConfig(BaseModel):
    """The Prometheus listener (off unless ``listen`` is set)."""

    model_config = ConfigDict(extra="forbid")

    listen: str | None = None  # HOST:PORT serving /metrics

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        if value is not None:
            parse_listen(value)
        return value


class TracingConfig(BaseModel):
    """OpenTelemetry export of run and stage spans (ids are kept and journaled either way)."""

    model_config = ConfigDict(extra="forbid")

    otlp_endpoint: str | None = None  # OTLP/HTTP traces URL, e.g. http://127.0.0.1:4318/v1/traces
    service_name: str = Field(default="flowmasond", min_length=1)

    @field_validator("otlp_endpoint")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value


class DaemonConfig(BaseModel):
    """Everything ``flowmasond`` reads from its TOML file, environment and flags."""

    model_config = ConfigDict(extra="forbid")

    state_dir: Path
    socket: Path
    pipeline_dirs: list[Path] = Field(default_factory=list)
    component_modules: list[str] = Field(default_factory=list)
    max_concurrent_runs: int = Field(default=8, ge=1)
    max_concurrency: int = Field(default=10, ge=1)  # stages in flight per run
    stage_log_max_bytes: int = Field(default=1 << 20, ge=0)  # kept per stage path in run_logs; 0: no stage logs
    recovery: Literal["auto", "manual"] = "auto"
    max_recovery_attempts: int = Field(default=3, ge=1)
    shutdown_grace_s: float = Field(default=30.0, ge=0)
    cancel_grace_s: float = Field(default=5.0, ge=0)
    allowed_uids: list[int] = Field(default_factory=list)  # may start/cancel/resume besides root and us
    socket_mode: int = 0o660
    max_request_bytes: int = Field(default=1 << 20, ge=1024)
    client_idle_timeout_s: float = Field(default=300.0, gt=0)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "console"] = "auto"
    hot_reload: bool = True
    # Pipeline keys unknown to both FlowMason and flowmasond are errors (else dropped with a warning).
    strict: bool = False
    journal: JournalConfig = Field(default_factory=JournalConfig)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    # Daemon environment variables pipelines may see (shell-style patterns): `{{env.X}}` resolves
    # only these, and shell stages inherit them on top of a small base (flowmasond.environment).
    env_allow: list[str] = Field(default_factory=lambda: list(DEFAULT_ENV_ALLOW))
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    tracing: TracingConfig = Field(default_factory=TracingConfig)
    providers: dict[str, dict[str, Any]] = Field(default_factory=dict)  # validated by the LLM layer
    default_provider: str | None = None

    @model_validator(mode="after")
    def _cluster_needs_postgresql(self) -> DaemonConfig:
        if self.cluster.enabled and self.journal.backend != "postgresql":
            raise ValueError("cluster.enabled needs journal.backend = \"postgresql\" (nodes share its database)")
        return self

    @property
    def journal_path(self) -> Path:
        return self.state_dir / "journal.sqlite3"


def _expand(value: str, env: dict[str, str]) -> str:
    """``$NAME`` and ``${NAME}`` from ``env``; an unset name is a configuration error naming the field."""
    import re

    def sub(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in env:
            raise ConfigurationError(f"journal.dsn_file names ${name}, which is not set",
                                     field="journal.dsn_file", value=value)
        return env[name]

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)", sub, value)


def default_paths(env: dict[str, str] | None = None) -> dict[str, Any]:
    """State dir, socket and pipeline folders for this environment (systemd, root, or plain user)."""
    env = dict(os.environ if env is None else env)
    home = Path(env.get("HOME") or Path.home())
    if env.get("STATE_DIRECTORY"):  # set by systemd's StateDirectory=
        state = Path(env["STATE_DIRECTORY"].split(":")[0])
    elif os.geteuid() == 0 and SYSTEM_CONFIG.parent.is_dir():
        state = Path("/var/lib/flowmason")
    else:
        state = Path(env.get("XDG_STATE_HOME") or home / ".local/state") / "flowmason"
    if env.get("RUNTIME_DIRECTORY"):  # systemd's RuntimeDirectory=
        socket = Path(env["RUNTIME_DIRECTORY"].split(":")[0]) / "flowmasond.sock"
    else:
        # The same rule the `flowmason` command uses, so both agree without configuration.
        socket = default_socket_path(environ=env)
    if env.get("CONFIGURATION_DIRECTORY"):
        pipelines = [Path(env["CONFIGURATION_DIRECTORY"].split(":")[0]) / "pipelines"]
    elif os.geteuid() == 0 and SYSTEM_CONFIG.parent.is_dir():
        pipelines = [SYSTEM_CONFIG.parent / "pipelines"]
    else:
        pipelines = [Path(env.get("XDG_CONFIG_HOME") or home / ".config") / "flowmason" / "pipelines"]
    return {"state_dir": state, "socket": socket, "pipeline_dirs": pipelines}


def load_config(path: str | Path | None = None, *, overrides: dict[str, Any] | None = None,
                env: dict[str, str] | None = None) -> DaemonConfig:
    """Build the configuration; every bad key or value is reported with its name and the file."""
    env = dict(os.environ if env is None else env)
    explicit = path or env.get("FLOWMASON_CONFIG")
    file_path = Path(explicit) if explicit else (SYSTEM_CONFIG if SYSTEM_CONFIG.is_file() else None)
    data: dict[str, Any] = dict(default_paths(env))
    if file_path is not None:
        try:
            with open(file_path, "rb") as fh:
                data.update(tomllib.load(fh))
        except FileNotFoundError:
            raise ConfigurationError("configuration file not found", file=str(file_path)) from None
        except PermissionError:
            raise ConfigurationError("configuration file is not readable", file=str(file_path)) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigurationError(f"invalid TOML: {exc}", file=str(file_path)) from None
    if env.get("FLOWMASON_STATE_DIR"):
        data["state_dir"] = env["FLOWMASON_STATE_DIR"]
    if env.get("FLOWMASON_SOCKET"):
        data["socket"] = env["FLOWMASON_SOCKET"]
    if env.get("FLOWMASON_PIPELINES"):
        data["pipeline_dirs"] = [p for p in env["FLOWMASON_PIPELINES"].split(os.pathsep) if p]
    if env.get("FLOWMASON_LOG_LEVEL"):
        data["log_level"] = env["FLOWMASON_LOG_LEVEL"].lower()
    for key, value in (overrides or {}).items():
        if value is not None:
            data[key] = value
    try:
        return DaemonConfig.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"])
            problems.append(f"{key}: {err['msg']}")
        where = str(file_path) if file_path else "defaults/environment/flags"
        raise ConfigurationError("invalid configuration: " + "; ".join(problems), file=where,
                                 keys=[".".join(str(p) for p in e["loc"]) for e in exc.errors()]) from None
