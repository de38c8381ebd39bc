"""Seeded test data for the data-in modules: small CSV writers, series makers, shared data;
a token endpoint on loopback for the OAUTHBEARER tests."""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

import numpy as np
import pytest

from stream_app.core.series import MeterSeries

START = 1736121600  # 2025-01-06T00:00:00+00:00, a Monday


def shared_data() -> Path:
    """MW_SHARED_DATA, else the `shared/data` folder beside the repository root."""
    default = Path(__file__).resolve().parents[2] / "shared" / "data"
    return Path(os.environ.get("MW_SHARED_DATA", default))


def steel_csv() -> Path:
    path = shared_data() / "steel_industry_energy" / "Steel_industry_data.csv"
    if not path.is_file():
        pytest.skip(f"real steel data not found at {path} (set MW_SHARED_DATA)")
    return path


def write_text(path: Path, lines: list[str], *, bom: bool = False, crlf: bool = False) -> Path:
    """Write lines exactly as given: the encoding quirks are what the tests are about."""
    text = ("\r\n" if crlf else "\n").join(lines) + ("\r\n" if crlf else "\n")
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


def daily_series(days: int = 14, *, seed: int = 0, interval_s: int = 900,
                 meter_id: str = "m1", labels: bool = False) -> MeterSeries:
    """A positive daily cycle with noise: every reading differs from its neighbours."""
    per_day = 86400 // interval_s
    n = days * per_day
    rng = np.random.default_rng(seed)
    phase = 2 * np.pi * np.arange(n) / per_day
    values = 50.0 + 30.0 * np.sin(phase) + rng.normal(0.0, 2.0, n)
    return MeterSeries(meter_id, "industrial", START + interval_s * np.arange(n), values,
                       interval_s, np.zeros(n, np.int8) if labels else None, [])


@contextlib.contextmanager
def token_endpoint(path: str, token: Callable[[int], tuple[str, int]]
                   ) -> Iterator[tuple[str, list[dict], dict]]:
    """An OAuth token endpoint on loopback answering the client-credentials grant: yields (its
    URL, the requests seen as {"auth", "body", "form"}, answers). `token(n)` gives the n-th
    request's (access token, expires_in); answers["status"] is the HTTP status it replies."""
    seen: list[dict] = []
    answers = {"status": 200}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"])).decode()
            seen.append({"auth": self.headers["Authorization"], "body": body,
                         "form": parse_qs(body)})
            access, expires_in = token(len(seen))
            payload = json.dumps({"access_token": access, "expires_in": expires_in,
                                  "token_type": "bearer"}).encode()
            self.send_response(answers["status"])
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}{path}", seen, answers
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
