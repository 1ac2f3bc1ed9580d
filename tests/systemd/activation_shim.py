"""Start a program the way systemd's socket activation does: the listening socket as fd 3.

Usage: ``activation_shim.py FD PROGRAM ARGS...``. Moves descriptor FD to 3, sets LISTEN_FDS=1
and LISTEN_PID to its own pid (which ``execv`` keeps), then executes PROGRAM. systemd itself sets
LISTEN_PID after fork, which a parent using subprocess cannot do; this shim is that step.
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str]) -> None:
    fd = int(argv[1])
    if fd != 3:
        os.dup2(fd, 3)  # dup2's copy is inheritable, as the program needs
        os.close(fd)
    else:
        os.set_inheritable(3, True)
    os.environ["LISTEN_FDS"] = "1"
    os.environ["LISTEN_PID"] = str(os.getpid())
    os.execv(argv[2], argv[2:])


if __name__ == "__main__":
    main(sys.argv)
