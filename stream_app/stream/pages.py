"""The worker's web port: /health, /metrics, the live alert page and its two JSON feeds.

    /health              bundle, registry, provider, assigned partitions (what a healthcheck needs)
    /metrics             Prometheus text (metrics.py)
    /                    the live alert page (web/index.html, web/app.js)
    /api/alerts          the last alert messages of this worker's meters and its silent meters
    /api/readings?meter  the history a meter's state keeps, for the page's plot
"""

from __future__ import annotations

import json
from importlib import resources

from stream_app.stream.context import WorkerContext

# --- what the pages answer -------------------------------------------------------------------

def health(ctx: WorkerContext, assignment) -> dict:
    return {
        "status": "ok",
        "bundle": ctx.scorer.bundle.version,
        "bundle_manifest_sha256": ctx.watcher.digest,
        "bundle_reloads": ctx.watcher.reloads,
        "registry": ctx.registry.versions() if ctx.registry is not None else None,
        "provider": ctx.scorer.detector.reconstructor.active_provider,
        "assigned": sorted(f"{tp.topic}:{tp.partition}" for tp in assignment),
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
    if not raw:
        return []
    state = json.loads(raw)
    history, step = state["h"], state["iv"]
    n = len(history["values"])
    return [[(history["last_ts"] - (n - 1 - i) * step) * 1000, v]
            for i, v in enumerate(history["values"])]


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
        return web.json(health(ctx, app.consumer.assignment()))

    @app.page("/")
    async def alerts_page(web, request):
        return web.html(web_file("index.html"))

    @app.page("/web/app.js")
    async def alerts_script(web, request):
        return web.bytes(web_file("app.js").encode(), content_type="text/javascript")

    @app.page("/api/alerts")
    async def alerts_json(web, request):
        return web.json(recent_alerts(ctx))

    @app.page("/api/readings")
    async def readings_json(web, request):
        return web.json(meter_readings(ctx, request.query.get("meter", "")))
