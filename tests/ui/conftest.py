"""Fixtures of the web-view tests: a real daemon, `flowmason ui` servers, and headless Chromium.

The browser is Debian's ``chromium`` driven by Selenium through ``/usr/bin/chromedriver`` (so
selenium-manager never downloads anything); ``.ci/run`` installs both when they are missing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any
from collections.abc import Callable, Iterator

import pytest

from daemon_support import DaemonProcess, _toml, drop_to, world_reachable_dir

from llm.fake_chat import FakeChatServer
from ui_support import ASK, CHROMEDRIVER, CHROMIUM, FAILING, GATED, NOBODY, WebView


@pytest.fixture(scope="module")
def open_dir() -> Iterator[Path]:
    """A directory uid 65534 can reach: the socket lives here."""
    with world_reachable_dir("fm-ui-") as path:
        yield path


@pytest.fixture(scope="module")
def fake_provider() -> Iterator[FakeChatServer]:
    """The local chat-completions fake the daemon's streaming provider points at."""
    server = FakeChatServer()
    yield server
    server.close()


@pytest.fixture(scope="module")
def ui_daemon(tmp_path_factory: pytest.TempPathFactory, open_dir: Path,
              fake_provider: FakeChatServer) -> Iterator[DaemonProcess]:
    """One daemon for the module, with the example pipelines and the test's own, socket open to all uids."""
    root = tmp_path_factory.mktemp("ui-daemon")
    (root / "state").mkdir()
    pipelines = root / "pipelines"
    pipelines.mkdir()
    for definition in (GATED, FAILING, ASK):
        (pipelines / f"{definition['id']}.pipeline.json").write_text(json.dumps(definition))
    # An invalid file: its errors are listed on the pipelines page.
    (pipelines / "broken.pipeline.json").write_text(json.dumps(
        {"id": "broken", "stages": [{"id": "lost", "component_type": "no_such_component"}]}))
    examples = Path(__file__).resolve().parents[2] / "examples" / "pipelines"
    for name in ("etl", "triage", "nightly"):
        shutil.copy(examples / f"{name}.pipeline.json", pipelines)
    config = root / "flowmasond.toml"
    config.write_text(_toml({"socket_mode": 0o666, "cancel_grace_s": 0.2, "shutdown_grace_s": 1.0,
                             "providers": {"local": {"base_url": fake_provider.base_url, "default_model": "m",
                                                     "stream": True, "timeout_s": 30.0,
                                                     "price_per_million_input": 2.0,
                                                     "price_per_million_output": 8.0}}}))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLOWMASON_", "NOTIFY_SOCKET", "LISTEN_"))}
    env["PYTHONUNBUFFERED"] = "1"
    env["FLOWMASON_ETL_OUT"] = str(root)
    daemon = DaemonProcess(state_dir=root / "state", socket=open_dir / "flowmasond.sock", pipelines=pipelines,
                           config=config, log_path=root / "daemon.log", env=env)
    daemon.start()
    yield daemon
    if daemon.proc is not None and daemon.proc.poll() is None:
        daemon.proc.kill()
        daemon.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def web_view(ui_daemon: DaemonProcess) -> Iterator[WebView]:
    """The real ``flowmason ui`` command, run as this test's uid (root: it may mutate)."""
    proc = subprocess.Popen([sys.executable, "-m", "flowmason_client.cli", "--socket", str(ui_daemon.socket), "ui"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ui_daemon.env,
                            start_new_session=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # the command prints its URL once it listens
        match = re.search(r"(http://127\.0\.0\.1:\d+)/\?token=(\S+)", line)
        assert match, f"no URL in {line!r}; stderr: {proc.stderr.read() if proc.poll() is not None else ''}"
        yield WebView(base=match.group(1), login=match.group(0), token=match.group(2))
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def reader_view(ui_daemon: DaemonProcess) -> Iterator[WebView]:
    """A web view served by a forked child that dropped to uid 65534: a reading-only user."""
    if os.geteuid() != 0:
        pytest.fail("the reading-only web view needs root to setuid() a child to 65534")
    import uvicorn

    from flowmason_client.ui.app import create_app, login_url

    token = "reader-token-" + os.urandom(8).hex()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    port = sock.getsockname()[1]
    config = uvicorn.Config(create_app(ui_daemon.socket, token), log_level="warning", lifespan="off")
    # Import everything the server needs now: after setuid the child cannot read this
    # interpreter's standard library under /root.
    config.load()
    _warm_up(create_app(ui_daemon.socket, token), token)
    pid = os.fork()
    if pid == 0:  # the child: serves until killed, never returns into pytest
        try:
            drop_to(NOBODY)
            uvicorn.Server(config).run(sockets=[sock])
        finally:
            os._exit(0)
    sock.close()
    try:
        base = f"http://127.0.0.1:{port}"
        yield WebView(base=base, login=login_url(base, token), token=token)
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


def _warm_up(app: Any, token: str) -> None:
    """Render a page in-process once so every lazily imported module is loaded before the fork."""
    import asyncio

    import httpx

    async def visit() -> None:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1",
                                     follow_redirects=True) as client:
            for path in (f"/?token={token}", "/static/ui.css", "/runs/r-none"):
                await client.get(path)

    asyncio.run(visit())


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium (``--no-sandbox``: the tests run as root in CI containers)."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            pytest.fail(f"{path} is missing: apt-get install chromium chromium-driver (see .ci/run)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1300,900", "--disable-extensions"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


@pytest.fixture
def wait_for(browser: Any) -> Callable[..., Any]:
    """``wait_for(condition, what)``: Selenium's WebDriverWait on the page, 20 s, with a message."""
    from selenium.webdriver.support.ui import WebDriverWait

    def wait(condition: Callable[[Any], Any], what: str, timeout: float = 20.0) -> Any:
        return WebDriverWait(browser, timeout, poll_frequency=0.05).until(condition, f"timed out waiting for {what}")

    return wait
