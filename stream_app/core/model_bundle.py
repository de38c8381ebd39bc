"""Model bundles: a folder of ONNX autoencoders, an Isolation Forest as arrays and manifest.json.

Loading verifies everything before anything is scored: the manifest (stream_app.core.manifest:
typed, every field required, unknown fields are errors), the SHA-256 and size of every file it
lists, that no unlisted file sits beside them, and that the bundle is confined to its folder:
its files are plain names in it, none of them (manifest.json included) a symbolic link, and the
manifest is at most manifest.MAX_BYTES. A bad bundle raises one BundleError whose message says
what is wrong; nothing is unpickled, ever.
"""

from __future__ import annotations

import hashlib
import os
import stat
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import BinaryIO

import numpy as np

from stream_app.core.errors import BundleError, ConfigError
from stream_app.core.evidence import MeterProfile, ProfileTable
from stream_app.core.isolation_forest import ForestScorer
from stream_app.core.manifest import FOREST_FILE, MAX_BYTES, Manifest, onnx_name
from stream_app.core.preprocessing import Normaliser
from stream_app.core.thresholds import CategoryLimits

MANIFEST = "manifest.json"
__all__ = ["FOREST_FILE", "MANIFEST", "Bundle", "BundleLayout", "onnx_name", "read_manifest",
           "write_manifest"]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with _open_plain(path) as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _open_plain(path: Path) -> BinaryIO:
    """A bundle file for reading, never through a symbolic link (O_NOFOLLOW: no race between
    a check and the open)."""
    return os.fdopen(os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)), "rb")


def _plain_file(path: Path, what: str) -> os.stat_result:
    """lstat of a bundle file that must be a regular file of the bundle's own."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise BundleError(f"bundle {path.parent} is incomplete: {what} is missing") from None
    except OSError as exc:
        raise BundleError(f"bundle {path.parent}: {what} cannot be read: {exc.strerror}") from None
    if stat.S_ISLNK(st.st_mode):
        raise BundleError(f"bundle {path.parent}: {what} is a symbolic link; a bundle holds "
                          "its own files")
    if not stat.S_ISREG(st.st_mode):
        raise BundleError(f"bundle {path.parent}: {what} is not a plain file")
    return st


def read_manifest_bytes(path: Path) -> bytes:
    """manifest.json's bytes: a plain file of the bundle, at most MAX_BYTES."""
    file = Path(path) / MANIFEST
    if not os.path.lexists(file):
        raise BundleError(f"no model bundle at {path}: {MANIFEST} is missing")
    st = _plain_file(file, MANIFEST)
    if st.st_size > MAX_BYTES:
        raise BundleError(f"bundle {path}: {MANIFEST} is {st.st_size} bytes, more than the "
                          f"{MAX_BYTES} a manifest may have")
    try:
        with _open_plain(file) as fh:
            data: bytes = fh.read(MAX_BYTES + 1)  # grown since the stat: from_json refuses
            return data
    except OSError as exc:
        raise BundleError(f"bundle {path}: {MANIFEST} cannot be read: {exc.strerror}") from None


def read_manifest(path: str | Path) -> Manifest:
    """The bundle's manifest, parsed and validated (its files are not verified: Bundle.load)."""
    data = read_manifest_bytes(Path(path))
    try:
        return Manifest.from_json(data)
    except BundleError as exc:
        raise BundleError(f"bundle {path}: {exc}") from None


@dataclass(frozen=True)
class BundleLayout:
    """Where a bundle's ONNX files are: all the Reconstructor needs (also before a bundle is done)."""

    path: Path
    models: tuple[str, ...]
    window_sizes: tuple[int, ...]

    def onnx_path(self, model: str, window: int) -> Path:
        return self.path / onnx_name(model, window)


@dataclass(frozen=True)
class Bundle:
    """A verified model bundle. Build it with Bundle.load(path)."""

    path: Path
    manifest: Manifest
    forest: ForestScorer
    limits: CategoryLimits
    profiles: ProfileTable = field(default_factory=lambda: ProfileTable({}))

    @property
    def version(self) -> str:
        return f"{self.manifest.name}@{self.manifest.version}"

    @property
    def window_sizes(self) -> tuple[int, ...]:
        return self.manifest.window_sizes

    @property
    def models(self) -> tuple[str, ...]:
        return self.manifest.models

    @property
    def max_window(self) -> int:
        return max(self.window_sizes)

    def onnx_path(self, model: str, window: int) -> Path:
        return self.path / onnx_name(model, window)

    def normaliser_for(self, meter_id: str) -> Normaliser | None:
        """The meter's training normalisation, or None: an unknown meter warms up first."""
        return self.manifest.normalisation.meters.get(meter_id)

    def profile_for(self, meter_id: str) -> MeterProfile | None:
        """The meter's time-of-week profile and fault statistics; None for a meter training
        never saw (it is scored by the reconstruction evidence alone)."""
        return self.profiles.get(meter_id)

    @classmethod
    def load(cls, path: str | Path) -> Bundle:
        path = Path(path)
        manifest = read_manifest(path)
        _verify_files(path, manifest)
        try:
            with _open_plain(path / FOREST_FILE) as fh:
                arrays = np.load(fh, allow_pickle=False)
                if not isinstance(arrays, np.lib.npyio.NpzFile):
                    raise BundleError(f"bundle {path}: {FOREST_FILE} is not an .npz archive")
                with arrays:
                    forest = ForestScorer.from_arrays(dict(arrays))
            decision = manifest.decision
            stats = {c: (v.mean, v.std) for c, v in decision.category_stats.items()}
            limits = CategoryLimits(dict(decision.limits), decision.score_mean,
                                    decision.score_std, stats)
            profiles = ProfileTable(dict(manifest.evidence.meters))
        except (ValueError, OSError, EOFError, zipfile.BadZipFile, ConfigError) as exc:
            raise BundleError(f"bundle {path} is incompatible: {exc}") from None
        if forest.n_features != len(manifest.feature_stats.median):
            raise BundleError("the Isolation Forest does not match the feature order")
        return cls(path, manifest, forest, limits, profiles)


def _verify_files(path: Path, manifest: Manifest) -> None:
    try:
        entries = list(os.scandir(path))
    except OSError as exc:
        raise BundleError(f"bundle {path} cannot be listed: {exc.strerror}") from None
    links = sorted(e.name for e in entries if e.is_symlink())
    if links:
        raise BundleError(f"bundle {path} holds symbolic links: {links[:5]}; a bundle holds "
                          "its own files")
    for name, entry in manifest.files.items():  # plain names (Manifest.validate)
        file = path / name
        st = _plain_file(file, name)
        if st.st_size != entry.bytes or sha256_file(file) != entry.sha256:
            raise BundleError(f"bundle {path} was modified: {name} does not match its SHA-256")
    present = {e.name for e in entries if e.is_file(follow_symlinks=False)} - {MANIFEST}
    unlisted = sorted(present - set(manifest.files))
    if unlisted:
        raise BundleError(f"bundle {path} holds files its manifest does not list: {unlisted[:5]}")


def write_manifest(path: Path, manifest: Manifest) -> Manifest:
    """Fill in the SHA-256 and size of every listed file, validate, then write manifest.json."""
    files = {name: replace(entry, sha256=sha256_file(path / name),
                           bytes=(path / name).stat().st_size)
             for name, entry in manifest.files.items()}
    text = replace(manifest, files=files).to_json()
    tmp = path / (MANIFEST + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path / MANIFEST)
    return Manifest.from_json(text)
