"""manifest.json, defined once: typed, frozen sections that are parsed, validated and written here.

The dataclasses below are the schema. `Manifest.from_json` is the only way a manifest is read and
`Manifest.to_json` the only way one is written (training, recalibration); readers use attributes
(`bundle.manifest.decision.limits`). A bundle is data from outside, so every rule is checked
before anything is scored, and each failure is one BundleError line naming the field's path
(`files["forest.npz"].bytes`, `decision.limits`):

- every field is required and typed, unknown or duplicated fields are errors;
- every number is finite (NaN, Infinity and 1e999 are refused while parsing) and every
  statistic within its range (spreads > 0); every category of CATEGORIES has a limit;
- model kinds come from MODEL_KINDS; file entries are plain names, exactly the files the models
  and windows imply (`cnn_gru_w96.onnx`, `forest.npz`): no separator, no `..`, no absolute path;
- the document is at most MAX_BYTES and its free-form parts at most MAX_DEPTH deep.

Free-form records (a model's config, training's config and metrics, audit entries) stay JSON
objects, read-only: provenance for people, never read by the scorer. A meter's profile is
`evidence.MeterProfile` itself: its JSON keys are its dataclass fields, parsed by its own
`from_dict`, so a field added there is a field of the manifest with no edit here (as is a
`preprocessing.Normaliser`). A Manifest built in code is checked when it is written: to_json
parses its own output back.

Longer than most modules (about 430 lines) for a reason: the schema and the parser driven by
its type hints are one idea, and apart each would be read only with the other open.
"""

from __future__ import annotations

import json
import math
import re
import types
from collections.abc import Mapping
from dataclasses import dataclass, fields, is_dataclass, replace
from functools import cache
from types import MappingProxyType
from typing import Any, Union, get_args, get_origin, get_type_hints

import numpy as np

from stream_app.core.errors import BundleError, ConfigError
from stream_app.core.evidence import MeterProfile
from stream_app.core.preprocessing import Normaliser
from stream_app.core.thresholds import CATEGORIES

SCHEMA_VERSION = 1
# The shipped manifest is 23 KB, a profiled meter adds about 11 KB: 64 MiB holds some 5,000
# profiled meters and refuses a 300 MB document before it is read.
MAX_BYTES = 64 << 20
MAX_DEPTH = 64  # a real manifest nests 7 deep (training.metrics.history[...].train_loss[i])
MAX_WINDOW = 100_000  # readings per window: a week of minutes is 10,080
MODEL_KINDS = ("cnn_gru", "lstm")  # the autoencoders training.models builds
ROLES = ("autoencoder", "isolation_forest")
FEATURE_TRANSFORMS = ("log",)  # scoring.log_errors
ERROR_MEASURES = ("dtw", "mse")
FOREST_FILE = "forest.npz"
_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")  # no separator, no leading dot
_SHA256 = re.compile(r"[0-9a-f]{64}")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def onnx_name(model: str, window: int) -> str:
    return f"{model}_w{window}.onnx"


class _Section:
    """A manifest section: its JSON keys are its dataclass fields."""

    @classmethod
    def from_dict(cls, data: Any, where: str = "") -> Any:
        """Parse and type-check `data` (a JSON value) as this section; `where` is its path."""
        return _parse(cls, data, where, 0)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = _dump(self)
        return out


@dataclass(frozen=True)
class FeatureStats(_Section):
    """Robust centre and spread of each forest feature on training rows: the features of
    feature_order, then the same again for the newest readings' error when
    evidence.recent_readings > 0."""

    median: tuple[float, ...]
    scale: tuple[float, ...]


@dataclass(frozen=True)
class DtwOptions(_Section):
    band: int | None  # Sakoe-Chiba band in readings; None: unconstrained
    normalise: bool  # DTW distance divided by the path length
    measure: str  # "dtw", or "mse" for the ablation


@dataclass(frozen=True)
class Normalisation(_Section):
    default: Normaliser  # for meters training never saw, until their own warm-up
    meters: Mapping[str, Normaliser]


@dataclass(frozen=True)
class ScoreStats(_Section):
    mean: float
    std: float


@dataclass(frozen=True)
class Decision(_Section):
    score_mean: float  # the forest score of held-out normal rows, all categories
    score_std: float
    limits: Mapping[str, float]  # z-score limit per usage category
    base_limit: float
    calibration: str  # how the limits were chosen, for people
    category_stats: Mapping[str, ScoreStats]


@dataclass(frozen=True)
class FileEntry(_Section):
    sha256: str
    bytes: int
    role: str  # one of ROLES
    model: str | None  # an autoencoder's kind and window; None for the forest
    window: int | None
    config: Mapping[str, Any] | None
    parity_max_abs_diff: float | None  # ONNX vs torch on validation windows
    opset: int | None


@dataclass(frozen=True)
class TrainedMeter(_Section):
    meter_id: str
    category: str
    readings: int
    first: int  # epoch seconds
    last: int
    interval_s: int
    labelled_anomalies: int | None
    repairs: tuple[str, ...]


@dataclass(frozen=True)
class TrainingRecord(_Section):
    command: str
    config: Mapping[str, Any]
    data: tuple[TrainedMeter, ...]
    metrics: Mapping[str, Any]


@dataclass(frozen=True)
class Evidence(_Section):
    """The evidence beside the reconstruction (stream_app.core.evidence)."""

    recent_readings: int  # error of the newest readings of each window; 0: window errors only
    profile_limit: float | None  # the profile branch's limit; None: no profile branch
    meters: Mapping[str, MeterProfile]


@dataclass(frozen=True)
class Manifest(_Section):
    schema_version: int
    name: str
    version: str
    created_at: str
    profile: str
    interval_s: int
    window_sizes: tuple[int, ...]
    models: tuple[str, ...]
    feature_order: tuple[str, ...]  # "model/window", window by window
    feature_transform: str
    feature_stats: FeatureStats
    dtw: DtwOptions
    normalisation: Normalisation
    warmup_readings: int
    decision: Decision
    files: Mapping[str, FileEntry]
    training: TrainingRecord
    attribution: str | None
    audit: tuple[Mapping[str, Any], ...]  # one entry per change after training (who, when, what)
    evidence: Evidence

    @classmethod
    def from_json(cls, data: bytes | str) -> Manifest:
        """Parse and validate manifest.json's content; any problem is one BundleError line."""
        if len(data) > MAX_BYTES:
            raise BundleError(f"the manifest is {len(data)} bytes, more than its limit {MAX_BYTES}")
        try:
            text = data.decode("utf-8") if isinstance(data, bytes) else data
            raw = json.loads(text, parse_float=_finite_float, parse_constant=_no_constant,
                             object_pairs_hook=_unique_keys)
        except RecursionError:
            raise BundleError(f"the manifest is not valid JSON: nested more than {MAX_DEPTH} "
                              "levels deep") from None
        except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, int digits limit
            raise BundleError(f"the manifest is not valid JSON: {_line(str(exc))}") from None
        version = raw.get("schema_version") if isinstance(raw, dict) else None
        if version != SCHEMA_VERSION and isinstance(version, int):  # before its fields: they differ
            raise BundleError(f"manifest schema_version {version} is not supported (this "
                              f"meterwatch reads version {SCHEMA_VERSION})")
        manifest: Manifest = cls.from_dict(raw)
        manifest.validate()
        return manifest

    def to_json(self) -> str:
        """The manifest as written to manifest.json, checked by parsing it back."""
        text = json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n"
        Manifest.from_json(text)
        return text

    @property
    def expected_files(self) -> tuple[str, ...]:
        """The files the models and windows imply: one ONNX file per pair, and the forest."""
        return (*(onnx_name(m, w) for m in self.models for w in self.window_sizes), FOREST_FILE)

    def with_limits(self, limits: Mapping[str, float], audit: Mapping[str, Any]) -> Manifest:
        """The manifest with new category limits and the audit entry that explains them."""
        decision = replace(self.decision, limits=MappingProxyType(dict(limits)))
        return replace(self, decision=decision, audit=(*self.audit, MappingProxyType(dict(audit))))

    def validate(self) -> None:
        """The rules between fields (each field's type is checked while parsing)."""
        _require(self.schema_version == SCHEMA_VERSION, "schema_version",
                 f"must be {SCHEMA_VERSION}")
        _require(self.interval_s > 0, "interval_s", "must be > 0")
        _require(len(self.window_sizes) > 0 and len(set(self.window_sizes)) == len(self.window_sizes)
                 and all(1 < w <= MAX_WINDOW for w in self.window_sizes), "window_sizes",
                 f"must be distinct sizes from 2 to {MAX_WINDOW}")
        _require(len(self.models) > 0 and len(set(self.models)) == len(self.models)
                 and set(self.models) <= set(MODEL_KINDS), "models",
                 f"must be distinct kinds of {', '.join(MODEL_KINDS)}")
        expected = tuple(f"{m}/{w}" for w in self.window_sizes for m in self.models)
        _require(self.feature_order == expected, "feature_order", f"must be {list(expected)}")
        _require(self.feature_transform in FEATURE_TRANSFORMS, "feature_transform",
                 f"must be one of {', '.join(FEATURE_TRANSFORMS)}")
        _require(self.dtw.measure in ERROR_MEASURES, "dtw.measure", "must be 'dtw' or 'mse'")
        _require(self.dtw.band is None or self.dtw.band >= 0, "dtw.band", "must be >= 0 or null")
        _require(self.warmup_readings > 0, "warmup_readings", "must be > 0")
        recent = self.evidence.recent_readings
        _require(0 <= recent <= min(self.window_sizes), "evidence.recent_readings",
                 f"{recent} is outside its window sizes")
        limit = self.evidence.profile_limit
        _require(limit is None or limit > 0, "evidence.profile_limit", "must be > 0 or null")
        n = len(expected) * (2 if recent else 1)
        stats = self.feature_stats
        _require(len(stats.median) == n and len(stats.scale) == n, "feature_stats",
                 f"must hold {n} values each to match the feature order")
        _require(all(s > 0 for s in stats.scale), "feature_stats.scale", "must be > 0")
        self._validate_decision()
        self._validate_files()

    def _validate_decision(self) -> None:
        d = self.decision
        _require(d.score_std > 0, "decision.score_std", "must be > 0")
        _require(d.base_limit > 0, "decision.base_limit", "must be > 0")
        for category, value in d.limits.items():
            _require(value > 0, f"decision.limits{_key(category)}", "must be > 0")
        for category in CATEGORIES:
            _require(category in d.limits, "decision.limits",
                     f"has no limit for category {category!r}")
        for category, stats in d.category_stats.items():
            _require(stats.std > 0, f"decision.category_stats{_key(category)}.std", "must be > 0")

    def _validate_files(self) -> None:
        for name, entry in self.files.items():
            where = f"files{_key(name)}"
            _require(_PLAIN_NAME.fullmatch(name) is not None, where,
                     "is not a plain file name inside the bundle")
            _require(_SHA256.fullmatch(entry.sha256) is not None, f"{where}.sha256",
                     "must be 64 lower-case hex digits")
            _require(entry.bytes >= 0, f"{where}.bytes", "must be >= 0")
            _require(entry.role in ROLES, f"{where}.role", f"must be one of {', '.join(ROLES)}")
            if entry.role == "autoencoder":
                _require(entry.model is not None and entry.window is not None
                         and entry.model in self.models and entry.window in self.window_sizes
                         and name == onnx_name(entry.model, entry.window),
                         where, "is not the ONNX file of one of the bundle's models and windows")
            else:
                _require(name == FOREST_FILE and entry.model is None and entry.window is None,
                         where, f"the forest is {FOREST_FILE}, of no model or window")
        absent = [name for name in self.expected_files if name not in self.files]
        _require(not absent, "files", f"lacks model files: {absent}")


# --- parsing and writing, driven by the dataclasses' type hints ---------------------------

def _require(ok: bool, where: str, problem: str) -> None:
    if not ok:
        raise BundleError(f"manifest field '{where}' {problem}")


def _line(text: str, limit: int = 200) -> str:
    """A message from the document as one short line."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."


def _key(key: str) -> str:
    """A mapping key in a field path: `["forest.npz"]`, escaped and short."""
    return f"[{_line(json.dumps(key), 80)}]"


def _join(where: str, name: str) -> str:
    if _IDENTIFIER.fullmatch(name):
        return f"{where}.{name}" if where else name
    return f"{where}{_key(name)}"


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {_line(text, 40)} is not finite")
    return value


def _no_constant(text: str) -> float:
    raise ValueError(f"{text} is not a number a manifest may hold")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"field {_line(json.dumps(key), 80)} appears twice")
            seen.add(key)
    return out


def _wrong(where: str, expected: str, node: Any) -> BundleError:
    return BundleError(f"manifest field '{where or 'root'}' has the wrong type: expected "
                       f"{expected}, got {type(node).__name__}")


@cache
def _hints(cls: type) -> dict[str, Any]:
    names = [f.name for f in fields(cls)]
    hints = get_type_hints(cls)
    return {name: hints[name] for name in names}


def _parse(tp: Any, node: Any, where: str, depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise BundleError(f"manifest field '{where}' is nested more than {MAX_DEPTH} levels deep")
    origin, args = get_origin(tp), get_args(tp)
    if tp is Any:
        return _freeze(node, where, depth)
    if origin in (Union, types.UnionType):
        if node is None and type(None) in args:
            return None
        (inner,) = (a for a in args if a is not type(None))
        return _parse(inner, node, where, depth)
    if tp is np.ndarray:
        tp, origin, args = tuple[float, ...], tuple, (float, ...)
    if isinstance(tp, type) and is_dataclass(tp):
        return _parse_object(tp, node, where, depth)
    if origin is tuple:
        if not isinstance(node, list):
            raise _wrong(where, "a list", node)
        return tuple(_parse(args[0], v, f"{where}[{i}]", depth + 1) for i, v in enumerate(node))
    if origin is Mapping:
        if not isinstance(node, dict):
            raise _wrong(where, "an object", node)
        return MappingProxyType({k: _parse(args[1], v, f"{where}{_key(k)}", depth + 1)
                                 for k, v in node.items()})
    return _scalar(tp, node, where)


def _scalar(tp: Any, node: Any, where: str) -> Any:
    is_int = isinstance(node, int) and not isinstance(node, bool)
    if tp is float and is_int:
        try:
            node = float(node)
        except OverflowError:
            raise BundleError(f"manifest field '{where}' is out of range") from None
    if tp is float and isinstance(node, float):
        if not math.isfinite(node):
            raise BundleError(f"manifest field '{where}' must be finite, got {node}")
        return node
    if (tp is int and is_int) or (tp is bool and isinstance(node, bool)) or \
            (tp is str and isinstance(node, str)):
        return node
    if tp in (float, int, bool, str):
        raise _wrong(where, {float: "a number", int: "an integer", bool: "true or false",
                             str: "a string"}[tp], node)
    raise TypeError(f"the manifest schema has a type it cannot parse: {tp!r} at {where}")


def _parse_object(cls: type, node: Any, where: str, depth: int) -> Any:
    if not isinstance(node, dict):
        raise _wrong(where, "an object", node)
    hints = _hints(cls)
    unknown = [k for k in node if k not in hints]
    if unknown:
        raise BundleError(f"manifest has unknown field '{_join(where, unknown[0])}'")
    # a codec class's runtime-only fields (its RUNTIME_FIELDS, if any) are not in the manifest
    optional = set(getattr(cls, "RUNTIME_FIELDS", ()))
    missing = [name for name in hints if name not in node and name not in optional]
    if missing:
        raise BundleError(f"manifest lacks field '{_join(where, missing[0])}'")
    values = {name: _parse(tp, node[name], _join(where, name), depth + 1)
              for name, tp in hints.items() if name in node}
    if issubclass(cls, _Section):
        return cls(**values)
    try:  # a class with its own codec (MeterProfile, Normaliser)
        return cls.from_dict(values)  # type: ignore[attr-defined]
    except (ValueError, ConfigError) as exc:
        raise BundleError(f"manifest field '{where}': {_line(str(exc))}") from None


def _freeze(node: Any, where: str, depth: int) -> Any:
    """A free-form JSON value, read-only."""
    if depth > MAX_DEPTH:
        raise BundleError(f"manifest field '{where}' is nested more than {MAX_DEPTH} levels deep")
    if isinstance(node, dict):
        return MappingProxyType({k: _freeze(v, f"{where}{_key(k)}", depth + 1)
                                 for k, v in node.items()})
    if isinstance(node, list):
        return tuple(_freeze(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(node))
    if isinstance(node, float) and not math.isfinite(node):
        raise BundleError(f"manifest field '{where}' must be finite, got {node}")
    return node


def _dump(value: Any) -> Any:
    if isinstance(value, _Section):
        return {f.name: _dump(getattr(value, f.name)) for f in fields(value)}  # type: ignore[arg-type]
    if isinstance(value, MeterProfile | Normaliser):
        return value.to_dict()
    if isinstance(value, Mapping):
        return {k: _dump(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_dump(v) for v in value]
    return value
