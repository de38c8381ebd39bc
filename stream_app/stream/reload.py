"""Hot reload of the worker's model bundle: verified, switched between batches, never half-way.

The worker polls its bundle folder's manifest. When its bytes change (a retrained bundle copied
in, `meterwatch recalibrate`, a new version moved into place), the whole bundle is loaded and
verified in a background thread (SHA-256 of every file, schema) and ONNX sessions are built;
only then does the scorer switch to it, between two batches. A bundle that fails to load keeps
the old one serving; it is logged once per manifest content and retried at every poll (a folder
still being copied verifies once the copy is complete).
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from stream_app.core.errors import MeterwatchError
from stream_app.core.model_bundle import MANIFEST, Bundle
from stream_app.core.scoring import Detector

log = logging.getLogger("meterwatch.reload")


def manifest_digest(path: Path) -> str | None:
    try:
        return hashlib.sha256((path / MANIFEST).read_bytes()).hexdigest()
    except OSError:
        return None


class BundleWatcher:
    """poll() returns a new Detector when the bundle at `path` changed and verifies, else None."""

    def __init__(self, path: Path, providers=None):
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
        try:
            detector = Detector(Bundle.load(self.path), providers=self.providers)
        except MeterwatchError as exc:
            if digest != self.failed_digest:
                self.failed_digest = digest
                self.failures += 1
                log.error("new bundle at %s refused, the old one keeps serving: %s",
                          self.path, exc)
            return None
        self.digest = digest
        self.reloads += 1
        log.info("switched to bundle %s", detector.bundle.version)
        return detector
