"""Model bundles: a folder of ONNX autoencoders, an Isolation Forest as arrays and manifest.json.

Loading verifies everything before anything is scored: the manifest's schema (unknown fields are
errors), the SHA-256 and size of every file it lists, that no unlisted file sits beside them, and
that every model/window pair named in the feature order has its ONNX file. A bad bundle raises
one BundleError whose message says what is wrong; nothing is unpickled, ever.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stream_app.core.errors import BundleError, ConfigError
from stream_app.core.evidence import MeterProfile, ProfileTable
from stream_app.core.isolation_forest import ForestScorer
from stream_app.core.preprocessing import Normaliser
from stream_app.core.thresholds import CategoryLimits

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
FOREST_FILE = "forest.npz"

# The manifest's schema: key -> type, or a nested schema. "*" maps any key to the given schema.
# Anything not named here is an error (a typo must not be silently ignored).
_FILE_ENTRY = {"sha256": str, "bytes": int, "role": str, "model": (str, type(None)),
               "window": (int, type(None)), "config": (dict, type(None)),
               "parity_max_abs_diff": (float, type(None)), "opset": (int, type(None))}
_NORM = {"mean": float, "std": float}
_SCHEMA: dict[str, Any] = {
    "schema_version": int,
    "name": str,
    "version": str,
    "created_at": str,
    "profile": str,
    "interval_s": int,
    "window_sizes": list,
    "models": list,
    "feature_order": list,
    "feature_transform": str,
    "feature_stats": {"median": list, "scale": list},
    "dtw": {"band": (int, type(None)), "normalise": bool, "measure": str},  # measure: optional
    "normalisation": {"default": _NORM, "meters": {"*": _NORM}},
    "warmup_readings": int,
    "decision": {"score_mean": float, "score_std": float, "limits": {"*": float},
                 "base_limit": float, "calibration": str, "category_stats": {"*": _NORM}},
    "files": {"*": _FILE_ENTRY},
    "training": dict,
    "attribution": (str, type(None)),
    "audit": list,
    # the evidence beside the reconstruction (stream_app.core.evidence); optional: bundles trained
    # before it score with the forest alone
    "evidence": {"recent_readings": int, "profile_limit": float,
                 "meters": {"*": {"median": list, "lower": list, "upper": list,
                                  "level": float, "max_value": float, "max_run": int,
                                  "ratio_center": float, "ratio_scale": float,
                                  "ratio_limit": float}}},
}
_REQUIRED = set(_SCHEMA) - {"attribution", "audit", "evidence"}


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check(node: Any, schema: Any, where: str) -> None:
    if isinstance(schema, dict):
        if not isinstance(node, dict):
            raise BundleError(f"manifest field {where or 'root'} must be an object")
        for key, value in node.items():
            sub = schema.get(key, schema.get("*"))
            if sub is None:
                raise BundleError(f"manifest has unknown field {where + key!r}")
            _check(value, sub, f"{where}{key}.")
        return
    types = schema if isinstance(schema, tuple) else (schema,)
    if float in types and isinstance(node, int) and not isinstance(node, bool):
        return
    if isinstance(node, bool) and bool not in types:
        raise BundleError(f"manifest field {where[:-1]!r} has the wrong type")
    if not isinstance(node, types):
        raise BundleError(f"manifest field {where[:-1]!r} has the wrong type")


def validate_manifest(manifest: dict) -> None:
    _check(manifest, _SCHEMA, "")
    missing = _REQUIRED - set(manifest)
    if missing:
        raise BundleError(f"manifest lacks required fields: {', '.join(sorted(missing))}")
    if manifest["schema_version"] != SCHEMA_VERSION:
        raise BundleError(
            f"manifest schema_version {manifest['schema_version']} is not supported "
            f"(this meterwatch reads version {SCHEMA_VERSION})"
        )
    expected = [f"{m}/{w}" for w in manifest["window_sizes"] for m in manifest["models"]]
    if manifest["feature_order"] != expected:
        raise BundleError(f"feature_order {manifest['feature_order']} != {expected}")
    if manifest["dtw"].get("measure", "dtw") not in ("dtw", "mse"):
        raise BundleError(f"dtw.measure {manifest['dtw']['measure']!r}: 'dtw' or 'mse'")
    evidence = manifest.get("evidence") or {}
    recent = evidence.get("recent_readings", 0)
    if recent < 0 or recent > min(manifest["window_sizes"] or [0]):
        raise BundleError(f"evidence.recent_readings {recent} is outside its window sizes")
    n = len(expected) * (2 if recent else 1)
    stats = manifest["feature_stats"]
    if len(stats["median"]) != n or len(stats["scale"]) != n:
        raise BundleError("feature_stats do not match the feature order")


def onnx_name(model: str, window: int) -> str:
    return f"{model}_w{window}.onnx"


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
    manifest: dict
    forest: ForestScorer
    limits: CategoryLimits
    profiles: ProfileTable = field(default_factory=lambda: ProfileTable({}))

    @property
    def version(self) -> str:
        return f"{self.manifest['name']}@{self.manifest['version']}"

    @property
    def window_sizes(self) -> tuple[int, ...]:
        return tuple(self.manifest["window_sizes"])

    @property
    def models(self) -> tuple[str, ...]:
        return tuple(self.manifest["models"])

    @property
    def max_window(self) -> int:
        return max(self.window_sizes)

    def onnx_path(self, model: str, window: int) -> Path:
        return self.path / onnx_name(model, window)

    def normaliser_for(self, meter_id: str) -> Normaliser | None:
        """The meter's training normalisation, or None: an unknown meter warms up first."""
        stats = self.manifest["normalisation"]["meters"].get(meter_id)
        return Normaliser.from_dict(stats) if stats else None

    def profile_for(self, meter_id: str) -> MeterProfile | None:
        """The meter's time-of-week profile and fault statistics; None for a meter training
        never saw (it is scored by the reconstruction evidence alone)."""
        return self.profiles.get(meter_id)

    @classmethod
    def load(cls, path: str | Path) -> Bundle:
        path = Path(path)
        manifest_path = path / MANIFEST
        if not manifest_path.is_file():
            raise BundleError(f"no model bundle at {path}: {MANIFEST} is missing")
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BundleError(f"{manifest_path} is not valid JSON: {exc}") from None
        validate_manifest(manifest)
        _verify_files(path, manifest)
        try:
            with np.load(path / FOREST_FILE, allow_pickle=False) as arrays:
                forest = ForestScorer.from_arrays(dict(arrays))
            decision = manifest["decision"]
            stats = {c: (v["mean"], v["std"])
                     for c, v in decision.get("category_stats", {}).items()}
            limits = CategoryLimits(decision["limits"], decision["score_mean"],
                                    decision["score_std"], stats)
            profiles = ProfileTable({m: MeterProfile.from_dict(p) for m, p in
                                     (manifest.get("evidence") or {}).get("meters", {}).items()})
        except (ValueError, OSError, ConfigError) as exc:
            raise BundleError(f"bundle {path} is incompatible: {exc}") from None
        if forest.n_features != len(manifest["feature_stats"]["median"]):
            raise BundleError("the Isolation Forest does not match the feature order")
        return cls(path, manifest, forest, limits, profiles)


def _verify_files(path: Path, manifest: dict) -> None:
    listed = manifest["files"]
    for name, entry in listed.items():
        file = path / name
        if not file.is_file():
            raise BundleError(f"bundle {path} is incomplete: {name} is missing")
        if file.stat().st_size != entry["bytes"] or sha256_file(file) != entry["sha256"]:
            raise BundleError(f"bundle {path} was modified: {name} does not match its SHA-256")
    present = {p.name for p in path.iterdir() if p.is_file()} - {MANIFEST}
    unlisted = sorted(present - set(listed))
    if unlisted:
        raise BundleError(f"bundle {path} holds files its manifest does not list: {unlisted}")
    needed = {onnx_name(m, w) for m in manifest["models"] for w in manifest["window_sizes"]}
    needed.add(FOREST_FILE)
    absent = sorted(needed - set(listed))
    if absent:
        raise BundleError(f"bundle {path} lacks model files: {absent}")


def write_manifest(path: Path, manifest: dict) -> dict:
    """Fill in the SHA-256 and size of every listed file, validate, then write manifest.json."""
    for name, entry in manifest["files"].items():
        entry["sha256"] = sha256_file(path / name)
        entry["bytes"] = (path / name).stat().st_size
    validate_manifest(manifest)
    tmp = path / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    tmp.replace(path / MANIFEST)
    return manifest
