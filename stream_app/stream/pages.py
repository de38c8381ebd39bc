"""The worker's web port: /health, /metrics, the live alert page and its two JSON feeds.

    /health              bundle, registry, provider, assigned partitions (never behind the token)
    /metrics             Prometheus text (metrics.py)
    /                    the live alert page (web/index.html, web/app.js, web/app.css)
    /api/alerts          the last alert messages of this worker's meters and its silent meters
    /api/readings?meter  the history a meter's state keeps, for the page's plot

Exposure (docs/RELIABILITY.md): the port binds MW_WEB_HOST (default 127.0.0.1). With
MW_WEB_TOKEN set, every path but /health needs `Authorization: Bearer <token>`; a browser
opens `/?token=<token>` once, which sets an HttpOnly, SameSite=Strict cookie and redirects to
`/` (the token leaves the address bar). Faust's own /router/ and /table/ pages are off (app.py),
and every response carries a Content-Security-Policy that allows only this origin's script,
style and fetches, with `X-Content-Type-Options: nosniff`.
"""

from __future__ import annotations

import hmac
from importlib import resources

from aiohttp import web as aioweb
from faust.exceptions import ConsumerNotStarted

from stream_app.core.meter_state import MeterState
from stream_app.stream.context import WorkerContext

OPEN_PATHS = frozenset({"/health"})  # healthchecks and orchestrators carry no token
TOKEN_COOKIE = "meterwatch_token"
SECURITY_HEADERS = {
    # the page loads its own script and style and fetches its own JSON; nothing else runs
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                               "connect-src 'self'; img-src 'self'; base-uri 'none'; "
                               "form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def _same(given: str | None, token: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


def _bearer(request) -> str | None:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


def security_middleware(token: str | None):
    """aiohttp middleware: the token check (when a token is set) and the security headers on
    every response, Faust's and errors included."""

    @aioweb.middleware
    async def middleware(request, handler):
        if token is not None and request.path not in OPEN_PATHS:
            if request.path == "/" and _same(request.query.get("token"), token):
                response = aioweb.Response(status=303, headers={"Location": "/"})
                response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="Strict",
                                    path="/")
                response.headers.update(SECURITY_HEADERS)
                return response
            if not (_same(_bearer(request), token)
                    or _same(request.cookies.get(TOKEN_COOKIE), token)):
                return aioweb.json_response(
                    {"error": "unauthorized: MW_WEB_TOKEN is set on this worker"}, status=401,
                    headers={**SECURITY_HEADERS, "WWW-Authenticate": 'Bearer realm="meterwatch"'})
        try:
            response = await handler(request)
        except aioweb.HTTPException as exc:  # 404, 405 ...: raised, still with the headers
            exc.headers.update(SECURITY_HEADERS)
            raise
        response.headers.update(SECURITY_HEADERS)
        return response

    return middleware


# --- what the pages answer -------------------------------------------------------------------

def health(ctx: WorkerContext, assignment) -> dict:
    """`assignment`: the consumer's partitions, None while it has not started ("starting")."""
    assert ctx.watcher is not None  # WorkerContext.__post_init__ sets it
    return {
        "status": "ok" if assignment is not None else "starting",
        "bundle": ctx.scorer.bundle.version,
        "bundle_manifest_sha256": ctx.watcher.digest,
        "bundle_reloads": ctx.watcher.reloads,
        "registry": ctx.registry.versions() if ctx.registry is not None else None,
        "provider": ctx.scorer.detector.reconstructor.active_provider,
        "assigned": sorted(f"{tp.topic}:{tp.partition}" for tp in assignment or ()),
        "broker_kind": ctx.kafka.broker_kind,
    }


def recent_alerts(ctx: WorkerContext) -> dict:
    return {"alerts": list(ctx.recent_alerts), "bundle": ctx.scorer.bundle.version,
            "silent_meters": ctx.silence.silent_meters()}


def meter_readings(ctx: WorkerContext, meter: str) -> dict:
    raw = ctx.table.get(meter.encode()) if meter else None
    return {"meter_id": meter, "readings": kept_readings(raw)}


def kept_readings(raw: bytes | None) -> list[list]:
    """[epoch ms, kWh] of the history a meter's state keeps (its last max_window readings, gaps
    filled): the live page draws an alert's window over them without a second copy in memory."""
    return MeterState.from_bytes(raw).kept_readings() if raw else []


def web_file(name: str) -> str:
    """A file of the live alert page (package data: stream_app/stream/web/)."""
    return (resources.files("stream_app.stream") / "web" / name).read_text(encoding="utf-8")


# --- binding them to an app ------------------------------------------------------------------

def register(app, ctx: WorkerContext) -> None:
    @app.page("/metrics")
    async def metrics_page(web, request):
        return web.bytes(ctx.metrics.render(), content_type="text/plain; version=0.0.4")

    @app.page("/health")
    async def health_page(web, request):
        try:
            assignment = app.consumer.assignment()
        except ConsumerNotStarted:  # the web port opens before the consumer runs
            return web.json(health(ctx, None), status=503)
        return web.json(health(ctx, assignment))

    @app.page("/")
    async def alerts_page(web, request):
        return web.html(web_file("index.html"))

    @app.page("/web/app.js")
    async def alerts_script(web, request):
        return web.bytes(web_file("app.js").encode(), content_type="text/javascript")

    @app.page("/web/app.css")
    async def alerts_style(web, request):
        return web.bytes(web_file("app.css").encode(), content_type="text/css")

    @app.page("/api/alerts")
    async def alerts_json(web, request):
        return web.json(recent_alerts(ctx))

    @app.page("/api/readings")
    async def readings_json(web, request):
        return web.json(meter_readings(ctx, request.query.get("meter", "")))
