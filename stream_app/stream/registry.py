"""Model registry: one bundle per company or industry profile, each with versions, hot-reloaded.

Layout under the registry root (MW_MODEL_ROOT, e.g. onnx_models/):

    <name>/manifest.json              a bundle without versions (e.g. default/)
    <name>/<version>/manifest.json    versioned: the highest version wins (natural order: 10 > 9)

A reading is scored by the bundle named after its company, else after its industry profile,
else by `default`. `refresh()` (the worker calls it every few seconds) picks up a new version
folder or a changed bundle: it is verified and its ONNX sessions built before the switch; a
bundle that fails to load is logged once and the one already serving stays.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from stream_app.core.errors import BundleError, MeterwatchError
from stream_app.core.model_bundle import MANIFEST, Bundle
from stream_app.core.scoring import Detector
from stream_app.stream.reload import BundleWatcher, manifest_digest

log = logging.getLogger("meterwatch.registry")


def _version_key(path: Path) -> list:
    return [(0, int(part), "") if part.isdigit() else (1, 0, part)
            for part in re.split(r"(\d+)", path.name) if part]


def latest_bundle(folder: Path) -> Path | None:
    """The folder itself when it is a bundle, else its highest version sub-folder."""
    if (folder / MANIFEST).is_file():
        return folder
    versions = [p for p in folder.iterdir() if p.is_dir() and (p / MANIFEST).is_file()]
    return max(versions, key=_version_key) if versions else None


class Registry:
    def __init__(self, root: Path, default: str = "default", providers=None):
        self.root, self.default, self.providers = Path(root), default, providers
        self.detectors: dict[str, Detector] = {}
        self.paths: dict[str, Path] = {}
        self._watchers: dict[str, BundleWatcher] = {}
        self._refused: set[tuple[Path, str | None]] = set()
        if not self.root.is_dir():
            raise BundleError(f"model registry {self.root} is not a folder")
        self.refresh()
        if default not in self.detectors:
            raise BundleError(f"model registry {self.root} has no {default!r} bundle")

    def resolve(self, company: str | None, profile: str | None) -> Detector:
        for name in (company, profile):
            if name and name in self.detectors:
                return self.detectors[name]
        return self.detectors[self.default]

    def versions(self) -> dict[str, str]:
        return {name: d.bundle.version for name, d in sorted(self.detectors.items())}

    def refresh(self) -> list[str]:
        """Load new or changed bundles; the names that switched."""
        switched = []
        for folder in sorted(p for p in self.root.iterdir() if p.is_dir()):
            path = latest_bundle(folder)
            if path is None:
                continue
            name = folder.name
            if self.paths.get(name) == path:
                fresh = self._watchers[name].poll()
            else:
                fresh = self._load(path)
                if fresh is not None:
                    self.paths[name] = path
                    self._watchers[name] = BundleWatcher(path, self.providers)
            if fresh is not None:
                self.detectors[name] = fresh
                switched.append(name)
                log.info("registry: %s now serves %s", name, fresh.bundle.version)
        return switched

    def _load(self, path: Path) -> Detector | None:
        try:
            return Detector(Bundle.load(path), providers=self.providers)
        except MeterwatchError as exc:
            key = (path, manifest_digest(path))
            if key not in self._refused:
                self._refused.add(key)
                log.error("registry: %s refused, keeping what serves: %s", path, exc)
            return None
