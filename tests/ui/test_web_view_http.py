"""The web view's HTTP surface without a browser: token cookie, origin check, a daemon that is down."""

from __future__ import annotations

from pathlib import Path

import httpx

from flowmason_client.ui.app import COOKIE, create_app

TOKEN = "t" * 43


def client_for(socket_path: Path) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(socket_path, TOKEN)),
                             base_url="http://127.0.0.1:8000")


async def test_the_token_becomes_a_strict_httponly_cookie_and_leaves_the_url(tmp_path: Path) -> None:
    """`/?token=` answers 303 to the same page without the token, setting an HttpOnly SameSite=Strict cookie."""
    async with client_for(tmp_path / "none.sock") as client:
        reply = await client.get(f"/pipelines?token={TOKEN}&x=1")
    assert reply.status_code == 303 and reply.headers["location"] == "/pipelines?x=1"
    cookie = reply.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}={TOKEN};") and "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert reply.headers["referrer-policy"] == "same-origin"


async def test_a_daemon_that_is_down_is_a_readable_503_page(tmp_path: Path) -> None:
    """With no daemon on the socket, pages answer 503 naming the socket path, and the view keeps serving."""
    socket_path = tmp_path / "none.sock"
    async with client_for(socket_path) as client:
        client.cookies.set(COOKIE, TOKEN)
        for _ in range(2):
            reply = await client.get("/")
            assert reply.status_code == 503
            assert "daemon not reachable" in reply.text and str(socket_path) in reply.text


async def test_a_post_from_another_origin_is_refused(tmp_path: Path) -> None:
    """A POST carrying the cookie but another site's Origin is refused before it reaches the daemon."""
    async with client_for(tmp_path / "none.sock") as client:
        client.cookies.set(COOKIE, TOKEN)
        reply = await client.post("/runs/r-1/cancel", headers={"Origin": "http://evil.example"})
    assert reply.status_code == 403 and "cross-origin" in reply.text


async def test_pages_forbid_framing_and_foreign_scripts(tmp_path: Path) -> None:
    """Every answer carries a CSP allowing only our own scripts, and no framing."""
    async with client_for(tmp_path / "none.sock") as client:
        client.cookies.set(COOKIE, TOKEN)
        reply = await client.get("/static/ui.js")
    assert reply.status_code == 200
    policy = reply.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy
