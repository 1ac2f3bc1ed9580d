"""What of the daemon's environment pipelines may see: shell stages' base environment and ``{{env.X}}``.

The daemon's environment can hold secrets (a provider key before it is read, cloud credentials an
operator exported, systemd's ``CREDENTIALS_DIRECTORY``). Pipelines are written by other people, so
nothing is passed on by default except a small documented base, plus the names the operator lists
in ``env_allow`` (shell-style patterns). Provider keys are removed from the environment when read
(``flowmasond.components.llm.providers.read_api_key``), so even ``env_allow = ["*"]`` cannot reach them.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterable, Iterator, Mapping
from fnmatch import fnmatchcase

# Every shell stage inherits these (when set in the daemon's environment): what programs need to
# find themselves, speak the right language and write temporary files, the daemon's own FLOWMASON_*
# settings (so a stage can call `flowmason`), and systemd's per-unit directories. Not
# CREDENTIALS_DIRECTORY: systemd credentials are the daemon's secrets.
STAGE_BASE_ENV: tuple[str, ...] = (
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "LC_*", "TZ", "TMPDIR",
    "FLOWMASON_*",
    "STATE_DIRECTORY", "RUNTIME_DIRECTORY", "CACHE_DIRECTORY", "LOGS_DIRECTORY", "CONFIGURATION_DIRECTORY",
)
# Without PATH, /bin/sh would search nothing; this is the usual default of a login shell.
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
# Default of the `env_allow` setting: what `{{env.X}}` may read and what stages inherit beyond the base.
DEFAULT_ENV_ALLOW: tuple[str, ...] = ("FLOWMASON_*",)


def matches(name: str, patterns: Iterable[str]) -> bool:
    """Whether ``name`` matches one of the shell-style ``patterns`` (case-sensitive)."""
    return any(fnmatchcase(name, pattern) for pattern in patterns)


def stage_base_env(allow: Iterable[str] = (), environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """A shell stage's inherited environment: the documented base plus the names ``allow`` matches."""
    source = os.environ if environ is None else environ
    patterns = (*STAGE_BASE_ENV, *allow)
    env = {name: value for name, value in source.items() if matches(name, patterns)}
    env.setdefault("PATH", DEFAULT_PATH)
    return env


class AllowedEnvironment(Mapping[str, str]):
    """A live, read-only view of the process environment holding only the names ``allow`` matches.

    The engine resolves ``{{env.X}}`` against it; ``describe_missing`` tells a pipeline author why a
    name is absent without saying whether a disallowed variable exists.
    """

    def __init__(self, allow: Iterable[str], environ: Mapping[str, str] | None = None) -> None:
        self.allow = tuple(allow)
        self._environ = os.environ if environ is None else environ

    def __getitem__(self, name: str) -> str:
        if not matches(name, self.allow):
            raise KeyError(name)
        return self._environ[name]

    def __iter__(self) -> Iterator[str]:
        return (name for name in list(self._environ) if matches(name, self.allow))

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def describe_missing(self, name: str) -> str:
        """Why ``{{env.<name>}}`` has no value."""
        if not matches(name, self.allow):
            return (f"environment variable '{name}' is not allowed: the daemon's env_allow setting "
                    f"({', '.join(self.allow) or 'empty'}) decides which variables pipelines may read")
        return f"environment variable '{name}' is not set"


def remove_secret(name: str) -> None:
    """Remove ``name`` from the environment, erasing its value from the process's original env block.

    ``os.environ.pop`` unsets the variable, but the bytes the process was started with stay where
    ``/proc/<pid>/environ`` reads them, and any process of our uid (a shell stage) can read that
    file. So the value is overwritten in place first, through libc's ``environ`` (glibc and musl).
    """
    prefix = name.encode() + b"="
    try:
        libc = ctypes.CDLL(None)
        entries = ctypes.POINTER(ctypes.c_void_p).in_dll(libc, "environ")
        index = 0
        while entries and entries[index]:
            address = entries[index]
            entry = ctypes.string_at(address)
            if entry.startswith(prefix):
                ctypes.memset(address + len(prefix), 0, len(entry) - len(prefix))
            index += 1
    except (OSError, AttributeError, ValueError):
        pass  # no libc environ to reach: unsetting below is all we can do
    os.environ.pop(name, None)
