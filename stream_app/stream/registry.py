"""Model registry: one bundle per company or industry profile, each with versions, hot-reloaded.

Layout under the registry root (MW_MODEL_ROOT, e.g. onnx_models/):

    <name>/manifest.json              a bundle without versions (e.g. default/)
    <name>/<version>/manifest.json    versioned: the highest version wins (10 > 9)

Version folders are named by ASCII decimal numbers (`7`, `10`); any other sub-folder is not a
version and is ignored (logged once). A bundle folder, or a link to one, must lie inside the
root: a version folder that is a symbolic link out of it is refused.

A reading is scored by the bundle named after its company, else after its industry profile,
else by `default`. `refresh()` (the worker calls it every few seconds) picks up a new version
folder or a changed bundle: it is verified and its ONNX sessions built before the switch; a
bundle that fails to load is logged once and the one already serving stays. At start-up a
`default` that does not load is an error saying why.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path

from stream_app.core.errors import BundleError
from stream_app.core.model_bundle import MANIFEST
from stream_app.core.scoring import Detector
from stream_app.stream.reload import BundleWatcher, load_detector, manifest_digest

log = logging.getLogger("meterwatch.registry")

# ASCII only: str.isdigit() also holds for '²', which int() refuses; 18 digits fit an int64
_VERSION = re.compile(r"[0-9]{1,18}")


def version_number(name: str) -> int | None:
    """The version a folder name stands for, or None when it is not a version."""
    return int(name) if _VERSION.fullmatch(name) else None


def _has_manifest(folder: Path) -> bool:
    return os.path.lexists(folder / MANIFEST)  # a link is found here, and refused by the loader


def latest_bundle(folder: Path) -> Path | None:
    """The folder itself when it is a bundle, else its highest version sub-folder."""
    if _has_manifest(folder):
        return folder
    versions = [(number, p) for p in folder.iterdir()
                if (number := version_number(p.name)) is not None and p.is_dir()
                and _has_manifest(p)]
    return max(versions)[1] if versions else None


class Registry:
    def __init__(self, root: Path, default: str = "default",
                 providers: Sequence[str] | None = None):
        self.root, self.default, self.providers = Path(root), default, providers
        self.detectors: dict[str, Detector] = {}
        self.paths: dict[str, Path] = {}
        self.refusals: dict[str, str] = {}  # name -> why its newest bundle does not serve
        self._watchers: dict[str, BundleWatcher] = {}
        self._logged: set[tuple[Path, str | None, str]] = set()
        self._started = False
        if not self.root.is_dir():
            raise BundleError(f"model registry {self.root} is not a folder")
        self.refresh()
        self._started = True
        if default not in self.detectors:
            why = self.refusals.get(default)
            raise BundleError(f"model registry {self.root} has no {default!r} bundle"
                              + (f": {why}" if why else ""))

    def resolve(self, company: str | None, profile: str | None) -> Detector:
        for name in (company, profile):
            if name and name in self.detectors:
                return self.detectors[name]
        return self.detectors[self.default]

    def versions(self) -> dict[str, str]:
        return {name: d.bundle.version for name, d in sorted(self.detectors.items())}

    def refresh(self) -> list[str]:
        """Load new or changed bundles; the names that switched. A folder that cannot be read
        is logged once and skipped: the others are still refreshed."""
        switched: list[str] = []
        try:
            folders = sorted(p for p in self.root.iterdir() if p.is_dir())
        except OSError as exc:
            self._refuse(self.root.name, self.root, f"cannot be listed: {exc.strerror}")
            return switched
        for folder in folders:
            name = folder.name
            try:
                path = latest_bundle(folder)
                self._note_ignored(folder)
            except OSError as exc:
                self._refuse(name, folder, f"cannot be listed: {exc.strerror}")
                continue
            if path is None:
                continue
            if not self._inside_root(path):
                self._refuse(name, path, f"resolves outside the registry root {self.root}")
                continue
            if self.paths.get(name) == path:
                fresh = self._watchers[name].poll()
            else:
                fresh, why = load_detector(path, self.providers)
                if fresh is None:
                    self._refuse(name, path, why)
                    continue
                self.paths[name] = path
                self._watchers[name] = BundleWatcher(path, self.providers)
            if fresh is not None:
                self.detectors[name] = fresh
                self.refusals.pop(name, None)
                switched.append(name)
                log.info("registry: %s now serves %s", name, fresh.bundle.version)
        return switched

    def _inside_root(self, path: Path) -> bool:
        try:
            return path.resolve().is_relative_to(self.root.resolve())
        except (OSError, RuntimeError):  # RuntimeError: a symlink loop
            return False

    def _refuse(self, name: str, path: Path, why: str) -> None:
        """Remember why `name` does not switch to `path`; log it once per manifest content."""
        self.refusals[name] = why
        if name == self.default and not self._started:
            return  # the start-up error says why, in its one line
        key = (path, manifest_digest(path), why)
        if key not in self._logged:
            self._logged.add(key)
            log.error("registry: %s refused, keeping what serves: %s", path, why)

    def _note_ignored(self, folder: Path) -> None:
        """Log once each sub-folder of a versioned bundle that is not named as a version."""
        if _has_manifest(folder):
            return
        for p in folder.iterdir():
            key = (p, None, "ignored")
            if key not in self._logged and version_number(p.name) is None and p.is_dir() \
                    and _has_manifest(p):
                self._logged.add(key)
                log.warning("registry: %s ignored: version folders are named by ASCII decimal "
                            "numbers", p)
