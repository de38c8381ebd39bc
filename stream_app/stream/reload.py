"""Hot reload of the worker's model bundle: verified, switched between batches, never half-way.

The worker polls its bundle folder's manifest. When its bytes change (a retrained bundle copied
in, `meterwatch recalibrate`, a new version moved into place), the whole bundle is loaded and
verified in a background thread (SHA-256 of every file, schema, confinement) and ONNX sessions
are built; only then does the scorer switch to it, between two batches. A bundle that fails to
load keeps the old one serving, whatever it makes the loader raise: it is logged once per
manifest content and retried at every poll (a folder still being copied verifies once the copy
is complete).
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
from collections.abc import Sequence
from pathlib import Path

from stream_app.core.errors import MeterwatchError
from stream_app.core.manifest import MAX_BYTES
from stream_app.core.model_bundle import MANIFEST, Bundle
from stream_app.core.scoring import Detector

log = logging.getLogger("meterwatch.reload")


def manifest_digest(path: Path) -> str | None:
    """SHA-256 of the manifest's bytes; None when there is none. A manifest the loader refuses
    unread (a link, not a file, over MAX_BYTES) is named by its stat instead: it is refused
    once per change, and never read whole at every poll."""
    file = Path(path) / MANIFEST
    try:
        st = os.lstat(file)
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_BYTES:
            return f"unread:{st.st_mode:o}:{st.st_size}:{st.st_mtime_ns}"
        with open(file, "rb") as fh:
            return hashlib.sha256(fh.read(MAX_BYTES + 1)).hexdigest()
    except OSError:
        return None


def load_detector(path: Path, providers: Sequence[str] | None) -> tuple[Detector | None, str]:
    """(the bundle's Detector, "") or (None, why it is refused in one line). A bundle is data
    from outside: whatever it makes the loader raise refuses it, never the worker."""
    try:
        return Detector(Bundle.load(path), providers=providers), ""
    except MeterwatchError as exc:
        return None, str(exc)
    except Exception as exc:  # noqa: BLE001 (a new bundle must not stop the one serving)
        return None, f"unexpected {type(exc).__name__}: {' '.join(str(exc).split())[:300]}"


class BundleWatcher:
    """poll() returns a new Detector when the bundle at `path` changed and verifies, else None."""

    def __init__(self, path: Path, providers: Sequence[str] | None = None):
        self.path = Path(path)
        self.providers = providers
        self.digest = manifest_digest(self.path)
        self.failed_digest: str | None = None
        self.reloads = 0
        self.failures = 0

    def poll(self) -> Detector | None:
        digest = manifest_digest(self.path)
        if digest is None or digest == self.digest:
            return None
        detector, why = load_detector(self.path, self.providers)
        if detector is None:
            if digest != self.failed_digest:
                self.failed_digest = digest
                self.failures += 1
                log.error("new bundle at %s refused, the old one keeps serving: %s",
                          self.path, why)
            return None
        self.digest = digest
        self.reloads += 1
        log.info("switched to bundle %s", detector.bundle.version)
        return detector
