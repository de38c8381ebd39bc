"""`faust -A stream_app.app worker -l info`: the worker's Faust app under the name a Faust user
types first. It lives in stream_app.stream.app (the stream wing); this module only hands it on,
built on first use like there (importing this module reads no setting and loads no bundle)."""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from stream_app.stream import app as module

    return module.app
