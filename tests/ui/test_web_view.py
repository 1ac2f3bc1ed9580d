"""`flowmason ui` in a real headless Chromium against a real daemon: runs, the live DAG, errors, actions.

Set ``FLOWMASON_UI_SCREENSHOTS=docs`` to write the screenshots the README shows.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any
from collections.abc import Callable

import httpx
import pytest
from selenium.webdriver.common.by import By

from daemon_support import DaemonProcess
from llm.fake_chat import FakeChatServer, Reply
from ui_support import HOSTILE_ERROR, HOSTILE_OUTPUT, PIECES, WebView

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def login(browser: Any, view: WebView) -> None:
    """Open the printed URL: it sets the token cookie and lands on the runs page."""
    browser.get(view.login)
    assert "token=" not in browser.current_url, "the token must leave the address bar"


def node_status(browser: Any, path: str) -> str | None:
    """The DAG node's status, read in one script call (the live refresh may replace it at any time)."""
    return browser.execute_script(
        "const n = document.querySelector(`svg.dag g.node[data-path=\"${arguments[0]}\"]`);"
        "return n ? n.getAttribute('data-status') : null;", path)


def click(browser: Any, element_id: str) -> None:
    """Click an element of the live part of a page, finding it again if a refresh replaced it meanwhile."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    def attempt(b: Any) -> bool:
        b.find_element(By.ID, element_id).click()
        return True

    WebDriverWait(browser, 10, ignored_exceptions=[StaleElementReferenceException]).until(attempt)


def screenshot(browser: Any, tmp_path: Path, name: str) -> Path:
    """Save a PNG of the page (into $FLOWMASON_UI_SCREENSHOTS when set) and check it is one."""
    folder = Path(os.environ.get("FLOWMASON_UI_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / name
    # The whole page (up to 1400 px), not the window: the viewport is set to the page's height.
    height = browser.execute_script("return Math.min(document.documentElement.scrollHeight, 1400)")
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                            {"width": 1300, "height": int(height), "deviceScaleFactor": 1, "mobile": False})
    try:
        assert browser.save_screenshot(str(target))
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    assert target.read_bytes()[:8] == PNG_MAGIC
    return target


def test_a_run_started_from_the_test_appears_on_the_runs_page(
        browser: Any, web_view: WebView, ui_daemon: DaemonProcess, tmp_path: Path,
        wait_for: Callable[..., Any]) -> None:
    """A run started over the socket is listed with its pipeline, status and what started it."""
    with ui_daemon.client() as client:
        etl = client.runs_start("etl").run_id
        nightly = client.runs_start("nightly").run_id
    ui_daemon.wait_for_status(etl, {"succeeded"})
    ui_daemon.wait_for_status(nightly, {"succeeded"})
    login(browser, web_view)
    row = wait_for(lambda b: b.find_elements(By.CSS_SELECTOR, f'tr[data-run="{etl}"]'), "the run's row")[0]
    assert "etl" in row.text and "succeeded" in row.text and "manual" in row.text
    children = browser.find_elements(By.XPATH, f'//tr[@data-run != "{nightly}"][td/a[text()="{nightly}"]]')
    assert sorted(c.text.split()[1] for c in children) == ["etl", "triage"]
    assert all("child of" in c.text for c in children), "a child run says which run started it"


def test_the_dag_turns_a_stage_from_running_to_succeeded_without_a_reload(
        browser: Any, web_view: WebView, ui_daemon: DaemonProcess, tmp_path: Path,
        wait_for: Callable[..., Any]) -> None:
    """The run page shows `wait` running, then succeeded once its gate opens, in the same page load."""
    gate = tmp_path / "gate"
    with ui_daemon.client() as client:
        run_id = client.runs_start("gated", {"gate": str(gate)}).run_id
    login(browser, web_view)
    browser.get(f"{web_view.base}/runs/{run_id}")
    wait_for(lambda b: node_status(b, "wait") == "running", "the wait stage to show as running")
    assert node_status(browser, "finish") == "not_started"
    browser.execute_script("window.__same_page = true")
    gate.touch()
    wait_for(lambda b: node_status(b, "finish") == "success", "the last stage to show as succeeded")
    assert node_status(browser, "wait") == "success"
    assert browser.execute_script("return window.__same_page === true"), "the page was reloaded"
    wait_for(lambda b: b.execute_script("return document.getElementById('run-status').textContent") == "succeeded",
             "the run to show as succeeded")


def test_the_dag_nests_control_flow_children_with_timing_bars(
        browser: Any, web_view: WebView, ui_daemon: DaemonProcess, tmp_path: Path) -> None:
    """A foreach's iterations and a trycatch's phases are drawn inside their owner, each with a timing bar."""
    with ui_daemon.client() as client:
        run_id = client.runs_start("etl").run_id
    ui_daemon.wait_for_status(run_id, {"succeeded"})
    login(browser, web_view)
    browser.get(f"{web_view.base}/runs/{run_id}")
    nested = {e.get_attribute("data-path"): e.get_attribute("data-status") for e in browser.find_elements(
        By.CSS_SELECTOR, 'g.node[data-path="each_record"] g.child')}
    assert nested == {f"each_record/{i}/{s}": "success" for i in range(3) for s in ("transform", "shape")}
    assert browser.find_elements(By.CSS_SELECTOR, 'g.node[data-path="load"] g.child[data-path="load/write_summary"]')
    assert len(browser.find_elements(By.CSS_SELECTOR, "svg.dag path.edge")) == 3  # extract→each→load→summary
    bars = {e.get_attribute("data-path") for e in browser.find_elements(By.CSS_SELECTOR, "svg.timeline g.bar")}
    assert {"extract", "each_record/2/transform", "load/log_done", "summary"} <= bars
    screenshot(browser, tmp_path, "ui-run-dag.png")


def test_a_failed_stage_error_is_one_click_away_and_shown_as_text(
        browser: Any, web_view: WebView, ui_daemon: DaemonProcess, wait_for: Callable[..., Any]) -> None:
    """Clicking the red stage opens its page with the error; markup in outputs and errors is never run."""
    with ui_daemon.client() as client:
        run_id = client.runs_start("failing").run_id
    ui_daemon.wait_for_status(run_id, {"failed"})
    login(browser, web_view)
    browser.get(f"{web_view.base}/runs/{run_id}")
    assert node_status(browser, "boom") == "failed"
    browser.find_element(By.CSS_SELECTOR, 'g.node[data-path="boom"] a').click()
    error = wait_for(lambda b: b.find_elements(By.ID, "stage-error"), "the stage's error")[0]
    assert HOSTILE_ERROR in error.text
    browser.get(f"{web_view.base}/runs/{run_id}/stages/ok")
    assert HOSTILE_OUTPUT in browser.find_element(By.ID, "stage-output").text
    assert browser.execute_script("return window.__pwned") is None


def test_cancel_button_cancels_the_run_for_an_allowed_user(
        browser: Any, web_view: WebView, ui_daemon: DaemonProcess, tmp_path: Path,
        wait_for: Callable[..., Any]) -> None:
    """Root's view shows Cancel on a running run; clicking it cancels the run in the daemon."""
    with ui_daemon.client() as client:
        run_id = client.runs_start("gated", {"gate": str(tmp_path / "never")}).run_id
    login(browser, web_view)
    browser.get(f"{web_view.base}/runs/{run_id}")
    wait_for(lambda b: node_status(b, "wait") == "running", "the wait stage to run")
    click(browser, "cancel")
    assert ui_daemon.wait_for_status(run_id, {"cancelled", "failed", "succeeded"})["status"] == "cancelled"
    wait_for(lambda b: b.execute_script("return document.getElementById('run-status').textContent") == "cancelled",
             "the page to show cancelled")
    assert browser.find_elements(By.ID, "resume"), "a cancelled run offers resume"


def test_a_reading_only_user_sees_no_cancel_button_and_cannot_cancel(
        browser: Any, reader_view: WebView, ui_daemon: DaemonProcess, tmp_path: Path,
        wait_for: Callable[..., Any]) -> None:
    """uid 65534's view shows the running run without buttons, and the daemon refuses its cancel."""
    gate = tmp_path / "gate"
    with ui_daemon.client() as client:
        run_id = client.runs_start("gated", {"gate": str(gate)}).run_id
    login(browser, reader_view)
    browser.get(f"{reader_view.base}/runs/{run_id}")
    wait_for(lambda b: node_status(b, "wait") == "running", "the wait stage to run")
    assert browser.find_elements(By.CSS_SELECTOR, "button") == []
    # Forged by hand: the daemon, not the page, decides.
    reply = httpx.post(f"{reader_view.base}/runs/{run_id}/cancel", cookies={"flowmason_ui": reader_view.token})
    assert reply.status_code == 403
    gate.touch()
    assert ui_daemon.wait_for_status(run_id, {"cancelled", "failed", "succeeded"})["status"] == "succeeded"


@pytest.mark.parametrize("how", ["no token", "wrong token", "wrong cookie"])
def test_every_request_needs_the_token(web_view: WebView, how: str) -> None:
    """Without the printed token (in the URL or its cookie) every page and the static files are refused."""
    kwargs: dict[str, Any] = {}
    suffix = ""
    if how == "wrong token":
        suffix = "?token=" + "x" * len(web_view.token)
    elif how == "wrong cookie":
        kwargs["cookies"] = {"flowmason_ui": web_view.token[:-1] + "?"}
    for path in ("/", "/pipelines", "/static/ui.js"):
        assert httpx.get(web_view.base + path + suffix, **kwargs).status_code == 403


def test_schedules_and_pipelines_pages_list_what_the_daemon_loaded(
        browser: Any, web_view: WebView, ui_daemon: DaemonProcess) -> None:
    """The schedules page lists nightly's cron schedule; the pipelines page lists every file, with its errors."""
    login(browser, web_view)
    browser.get(f"{web_view.base}/schedules")
    assert "30 2 * * *" in browser.find_element(By.CSS_SELECTOR, 'tr[data-schedule="nightly/nightly-0230"]').text
    browser.get(f"{web_view.base}/pipelines")
    listed = {e.get_attribute("data-pipeline"): e.get_attribute("data-valid")
              for e in browser.find_elements(By.CSS_SELECTOR, "tr[data-pipeline]")}
    assert listed == {"etl": "yes", "triage": "yes", "nightly": "yes", "gated": "yes", "failing": "yes",
                      "ask": "yes", "broken": "no"}
    issues = browser.find_element(By.XPATH, '//tr[@data-pipeline="broken"]/following-sibling::tr[1]').text
    assert "broken.pipeline.json" in issues and "lost" in issues and "no_such_component" in issues


def test_an_llm_answer_streams_into_the_run_page_as_text(
        browser: Any, web_view: WebView, ui_daemon: DaemonProcess, fake_provider: FakeChatServer,
        wait_for: Callable[..., Any]) -> None:
    """Pieces said before the page opened and after it both appear, as text, while the stage runs."""
    gate = threading.Event()
    fake_provider.enqueue(Reply.streamed(PIECES, gate=gate, gate_after=2))
    try:
        with ui_daemon.client() as client:
            run_id = client.runs_start("ask").run_id
        login(browser, web_view)
        browser.get(f"{web_view.base}/runs/{run_id}")

        def streamed(b: Any) -> str:
            return b.execute_script(
                "const p = document.querySelector('#llm-stream pre[data-path=\"write\"]');"
                "return p ? p.textContent : '';")

        wait_for(lambda b: streamed(b) == "".join(PIECES[:2]), "the first two pieces")
        assert node_status(browser, "write") == "running"
        gate.set()
        wait_for(lambda b: streamed(b) == "".join(PIECES), "the whole answer")
        wait_for(lambda b: node_status(b, "write") == "success", "the stage to succeed")
        assert browser.find_elements(By.CSS_SELECTOR, "#llm-stream b") == [], "markup in an answer is text"
    finally:
        gate.set()


def test_the_runs_page_filters_by_status_and_pipeline(
        browser: Any, web_view: WebView, ui_daemon: DaemonProcess, tmp_path: Path) -> None:
    """The status and pipeline filters list exactly the runs the daemon reports for them."""
    with ui_daemon.client() as client:
        ui_daemon.wait_for_status(client.runs_start("failing").run_id, {"failed"})
        failed = {r.run_id for r in client.runs_list(status="failed").runs}
        etl = {r.run_id for r in client.runs_list(pipeline_id="etl").runs}
    login(browser, web_view)
    screenshot(browser, tmp_path, "ui-runs.png")
    browser.get(f"{web_view.base}/?status=failed")
    shown = {e.get_attribute("data-run") for e in browser.find_elements(By.CSS_SELECTOR, "tr[data-run]")}
    assert shown == failed and failed
    browser.get(f"{web_view.base}/?pipeline=etl")
    shown = {e.get_attribute("data-run") for e in browser.find_elements(By.CSS_SELECTOR, "tr[data-run]")}
    assert shown == etl and etl
