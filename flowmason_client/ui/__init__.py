"""``flowmason ui``: a local web view of runs, started by a user like a Jupyter server.

It listens on 127.0.0.1 only, prints a URL holding a random token, and talks to the daemon over
the control socket as the user who started it. Needs the ``ui`` extra (Starlette, uvicorn,
Jinja2): ``pip install 'flowmasond[ui]'``.
"""

from __future__ import annotations

import secrets
import socket
import sys
from pathlib import Path
from typing import TextIO

HOST = "127.0.0.1"


def missing_dependencies() -> str | None:
    """The install hint when the ``ui`` extra is not installed, else None."""
    try:
        import jinja2  # noqa: F401
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        return f"flowmason ui needs the 'ui' extra ({exc.name} is missing): pip install 'flowmasond[ui]'"
    return None


def bind(port: int) -> socket.socket:
    """A listening TCP socket on 127.0.0.1 (``port`` 0 picks a free one)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, port))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def serve(socket_path: str | Path | None, sock: socket.socket, *, token: str | None = None,
          out: TextIO = sys.stdout, open_browser: bool = False) -> None:
    """Serve the web view on ``sock`` until interrupted; prints the URL (with its token) first."""
    import uvicorn

    from flowmason_client.ui.app import create_app, login_url

    token = token or secrets.token_urlsafe(32)
    host, port = sock.getsockname()[:2]
    url = login_url(f"http://{host}:{port}", token)
    print(f"flowmason ui: open {url}", file=out, flush=True)
    if open_browser:
        import webbrowser
        webbrowser.open(url)
    config = uvicorn.Config(create_app(socket_path, token), log_level="warning", lifespan="off",
                            timeout_graceful_shutdown=2)
    uvicorn.Server(config).run(sockets=[sock])
