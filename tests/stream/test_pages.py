"""The worker's web port over real HTTP, no broker: aiohttp serves the app's own routes on a
loopback port. Exposure: bind address, bearer token, Faust's pages off, CSP and nosniff."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from aiohttp import ClientSession, CookieJar
from aiohttp.test_utils import TestServer
from yarl import URL

from stream_app.core.errors import ConfigError
from stream_app.core.model_bundle import Bundle
from stream_app.core.scoring import Detector
from stream_app.stream.app import create_app
from stream_app.stream.pages import SECURITY_HEADERS, TOKEN_COOKIE
from stream_app.stream.settings import KafkaSettings, WorkerSettings

DEFAULT_BUNDLE = Path(__file__).resolve().parents[2] / "onnx_models" / "default"
TOKEN = "0123456789abcdef-test-token"
PAGES = ["/", "/web/app.js", "/web/app.css", "/api/alerts", "/api/readings?meter=m-1",
         "/metrics"]


@pytest.fixture(scope="module")
def detector():
    return Detector(Bundle.load(DEFAULT_BUNDLE))


def serve(detector, tmp_path, requests, **settings):
    """Run `requests(session, base_url)` against the app's web routes; returns its result."""
    app = create_app(KafkaSettings(), WorkerSettings(data_dir=tmp_path, **settings), detector,
                     ["meter.a"])

    async def run():
        server = TestServer(await app.web.wsgi(), host="127.0.0.1")
        await server.start_server()
        try:
            # a browser keeps cookies of an IP-addressed host; aiohttp only when told
            async with ClientSession(cookie_jar=CookieJar(unsafe=True)) as session:
                return await requests(session, str(server.make_url("")).rstrip("/"))
        finally:
            await server.close()

    return app, asyncio.run(run())


async def fetch(session, url, **kwargs) -> tuple[int, dict, bytes]:
    async with session.get(url, allow_redirects=False, **kwargs) as resp:
        return resp.status, dict(resp.headers), await resp.read()


def test_every_page_carries_the_security_headers(detector, tmp_path):
    async def requests(session, base):
        return {path: await fetch(session, base + path)
                for path in [*PAGES, "/health", "/no-such-page"]}

    _, got = serve(detector, tmp_path, requests)
    expected = {**dict.fromkeys(PAGES, 200), "/health": 503, "/no-such-page": 404}
    assert {path: status for path, (status, _, _) in got.items()} == expected  # 503: no consumer
    assert json.loads(got["/health"][2])["status"] == "starting"
    for path, (_, headers, _) in got.items():
        for name, value in SECURITY_HEADERS.items():
            assert headers.get(name) == value, (path, name)
    csp = SECURITY_HEADERS["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp and "unsafe" not in csp
    page = got["/"][2].decode()
    assert "<style" not in page and "style=" not in page and "<script>" not in page  # CSP-clean
    assert got["/web/app.css"][1]["Content-Type"].startswith("text/css")


def test_faust_router_and_table_pages_are_off(detector, tmp_path):
    async def requests(session, base):
        return [(await fetch(session, base + path))[0]
                for path in ("/router/", "/table/", "/table/meter-state/")]

    _, statuses = serve(detector, tmp_path, requests)
    assert statuses == [404, 404, 404]


def test_the_port_binds_loopback_unless_told(detector, tmp_path):
    app = create_app(KafkaSettings(), WorkerSettings(data_dir=tmp_path), detector, ["meter.a"])
    assert app.conf.web_bind == "127.0.0.1"
    app = create_app(KafkaSettings(), WorkerSettings(data_dir=tmp_path, web_host="0.0.0.0"),
                     detector, ["meter.a"])
    assert app.conf.web_bind == "0.0.0.0"


def test_with_a_token_every_page_but_health_needs_it(detector, tmp_path):
    async def requests(session, base):
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        return {
            "anonymous": {p: (await fetch(session, base + p))[0] for p in [*PAGES, "/health"]},
            "wrong": (await fetch(session, base + "/metrics",
                                  headers={"Authorization": "Bearer nope-nope-nope-nope"}))[0],
            "bearer": {p: (await fetch(session, base + p, headers=bearer))[0] for p in PAGES},
            "unauthorized": await fetch(session, base + "/api/alerts"),
        }

    _, got = serve(detector, tmp_path, requests, web_token=TOKEN)
    assert got["anonymous"] == {**dict.fromkeys(PAGES, 401), "/health": 503}  # open, starting
    assert got["wrong"] == 401
    assert got["bearer"] == dict.fromkeys(PAGES, 200)
    status, headers, body = got["unauthorized"]
    assert headers["WWW-Authenticate"].startswith("Bearer")
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert TOKEN not in body.decode() and "MW_WEB_TOKEN" in json.loads(body)["error"]


def test_a_browser_opens_the_page_with_the_token_once(detector, tmp_path):
    """/?token=... sets an HttpOnly SameSite cookie and redirects; the page's script, style and
    JSON then load with the cookie alone."""
    async def requests(session, base):
        status, headers, _ = await fetch(session, f"{base}/?token={TOKEN}")
        cookie = session.cookie_jar.filter_cookies(URL(base))[TOKEN_COOKIE]
        after = [(await fetch(session, base + p))[0] for p in PAGES]
        wrong = (await fetch(session, f"{base}/?token=not-the-token-at-all"))[0]
        return status, headers, cookie, after, wrong

    _, (status, headers, cookie, after, wrong) = serve(detector, tmp_path, requests,
                                                       web_token=TOKEN)
    assert status == 303 and headers["Location"] == "/"
    assert "HttpOnly" in headers["Set-Cookie"] and "SameSite=Strict" in headers["Set-Cookie"]
    assert cookie.value == TOKEN
    assert after == [200] * len(PAGES)
    assert wrong == 200  # the cookie still counts; a wrong query token adds nothing


def test_web_settings_are_validated_and_the_token_never_shows():
    worker = WorkerSettings.from_env({"MW_WEB_TOKEN": TOKEN, "MW_WEB_HOST": "::1"})
    assert worker.web_host == "::1" and worker.web_token.reveal() == TOKEN
    assert TOKEN not in repr(worker) and TOKEN not in str(worker)
    with pytest.raises(ConfigError, match="MW_WEB_TOKEN must be 16"):
        WorkerSettings.from_env({"MW_WEB_TOKEN": "short"})
    with pytest.raises(ConfigError, match="MW_WEB_HOST"):
        WorkerSettings.from_env({"MW_WEB_HOST": "http://0.0.0.0/"})
