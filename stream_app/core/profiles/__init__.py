"""Industry profiles: everything that differs between industries lives in JSON, not in code.

A profile (`stream_app/core/profiles/<name>.json`) carries, for one industry:

    name, description     identification
    limits                z-score limit per usage category, or null to compute them
    base_limit            global limit used when `limits` is null (thresholds.calibrate_limits);
                          training lowers it to the 99.5th percentile of held-out normal
                          z-scores when those never reach it (training/pipeline.py)
    usage_ratios          expected share of consumption per category (positive, sum 1)
    gamma                 how much a category's share moves its calibrated limit
    augmentation          {"method": "mi_fgsm", "epsilon", "momentum", "steps", "enabled"}
    simulator             {"scale_spread", "categories": {category: {...}}} (see below)

Per simulated category (required keys first, then optional ones with their defaults):

    base_kwh        kWh per interval at relative level 1.0 (one 15-min reading)
    levels          {"code": relative level}: one-character codes, e.g. the steel plant's load
                    classes L (light) / M (medium) / X (maximum)
    weekday         24 codes, one per hour of the day (Monday to Friday)
    weekend         24 codes for Saturday and Sunday
    weekend_factor  multiplies every weekend level
    noise           relative std of the multiplicative reading noise
    day_variation   relative std of a per-day factor (0)
    season          12 monthly factors, January first (null = no season); for an
                    intermittent load it scales the chance that the pump runs that day
    cycle           {"period_min", "duty", "amplitude"}: compressor on/off cycling (null)
    intermittent    {"day_prob", "min_hours", "max_hours", "idle"}: a pump that runs on some
                    days only, for a few hours inside the hours whose level is above idle (null)
    wander          per-step std of a slow AR(1) drift of the level, continuous processes (0)

Categories are those of `thresholds.CATEGORIES`; a profile may add its own only when it gives
explicit limits, since the study's categories are the only ones the calibration was checked on.
Unknown keys anywhere are errors: a misspelt key would otherwise silently fall back to a default.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from stream_app.core.errors import ConfigError
from stream_app.core.thresholds import CATEGORIES, calibrate_limits

PROFILE_DIR = Path(__file__).resolve().parent  # the JSON files sit beside this module

_TOP_KEYS = ("name", "description", "limits", "base_limit", "usage_ratios", "gamma",
             "augmentation", "simulator")
_AUG_KEYS = ("method", "epsilon", "momentum", "steps", "enabled")
_SIM_KEYS = ("scale_spread", "categories")
_CAT_REQUIRED = ("base_kwh", "levels", "weekday", "weekend", "weekend_factor", "noise")
_CAT_DEFAULTS = {"day_variation": 0.0, "season": None, "cycle": None, "intermittent": None,
                 "wander": 0.0}
_CYCLE_KEYS = ("period_min", "duty", "amplitude")
_INTERMITTENT_KEYS = ("day_prob", "min_hours", "max_hours", "idle")
AUGMENTATION_METHODS = ("mi_fgsm",)
RATIO_TOLERANCE = 1e-3  # ratios are written by hand with two or three decimals


@dataclass(frozen=True)
class Augmentation:
    """MI-FGSM settings: epsilon on z-scored windows, momentum mu, `steps` iterations."""

    method: str
    epsilon: float
    momentum: float
    steps: int
    enabled: bool


@dataclass(frozen=True)
class Profile:
    """One industry's validated settings. `limits` resolves explicit or calibrated limits."""

    name: str
    description: str
    explicit_limits: Mapping[str, float] | None
    base_limit: float
    usage_ratios: Mapping[str, float]
    gamma: float
    augmentation: Augmentation
    simulator: Mapping[str, Any]
    source: str

    @property
    def categories(self) -> tuple[str, ...]:
        """The study's categories first (in their usual order), then any extra ones."""
        known = [c for c in CATEGORIES if c in self.usage_ratios]
        return tuple(known + [c for c in self.usage_ratios if c not in CATEGORIES])

    @property
    def limits(self) -> dict[str, float]:
        if self.explicit_limits is not None:
            return dict(self.explicit_limits)
        return calibrate_limits(self.base_limit, self.usage_ratios, self.gamma)


def list_profiles() -> list[str]:
    """Names of the profiles shipped with meterwatch."""
    return sorted(p.stem for p in PROFILE_DIR.glob("*.json"))


def load_profile(name_or_path: str | Path) -> Profile:
    """A shipped profile by name (`metal`) or any profile file by path (`my_plant.json`)."""
    text = str(name_or_path)
    path = Path(text)
    if not (text.endswith(".json") or path.is_file()):
        path = PROFILE_DIR / f"{text}.json"
        if not path.is_file():
            raise ConfigError(f"unknown profile {text!r}; known: {', '.join(list_profiles())}")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read profile {path.name}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"profile {path.name} is not valid JSON: {exc}") from None
    return _parse(raw, path.name)


# The parsers below take JSON as json.loads returns it (Any) and check every value they read.
def _keys(obj: Any, where: str, file: str, required: Collection[str],
          optional: Collection[str] = ()) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise ConfigError(f"{file}: {where} must be an object")
    for key in obj:
        if key not in required and key not in optional:
            raise ConfigError(f"{file}: unknown key {where}.{key}")
    for key in required:
        if key not in obj:
            raise ConfigError(f"{file}: missing key {where}.{key}")
    return obj


def _num(value: Any, where: str, file: str, *, lo: float = 0.0, lo_open: bool = False,
         hi: float = math.inf) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value > lo if lo_open else value >= lo) and value <= hi
    if not ok:
        bound = f"{'>' if lo_open else '>='} {lo}" + (f" and <= {hi}" if hi < math.inf else "")
        raise ConfigError(f"{file}: {where} must be a number {bound}, got {value!r}")
    return float(value)


def _per_category(obj: Any, where: str, file: str, **bounds: Any) -> dict[str, float]:
    if not isinstance(obj, dict) or not obj:
        raise ConfigError(f"{file}: {where} must be a non-empty object of category: number")
    return {c: _num(v, f"{where}.{c}", file, **bounds) for c, v in obj.items()}


def _parse(raw: Any, file: str) -> Profile:
    _keys(raw, "profile", file, _TOP_KEYS)
    name = raw["name"]
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{file}: name must be a non-empty string")
    if not isinstance(raw["description"], str):
        raise ConfigError(f"{file}: description must be a string")
    ratios = _per_category(raw["usage_ratios"], "usage_ratios", file, lo=0.0, lo_open=True)
    if abs(sum(ratios.values()) - 1.0) > RATIO_TOLERANCE:
        raise ConfigError(f"{file}: usage_ratios must sum to 1, got {sum(ratios.values()):.4f}")
    limits = raw["limits"]
    if limits is not None:
        limits = _per_category(limits, "limits", file, lo=0.0, lo_open=True)
        if set(limits) != set(ratios):
            raise ConfigError(f"{file}: limits and usage_ratios must name the same categories, "
                              f"got {sorted(limits)} and {sorted(ratios)}")
    extra = [c for c in ratios if c not in CATEGORIES]
    if extra and limits is None:
        raise ConfigError(f"{file}: category {extra[0]!r} is not one of {', '.join(CATEGORIES)}; "
                          "an extra category needs explicit limits")
    aug = _keys(raw["augmentation"], "augmentation", file, _AUG_KEYS)
    if aug["method"] not in AUGMENTATION_METHODS:
        raise ConfigError(f"{file}: augmentation.method must be one of {AUGMENTATION_METHODS}")
    if not isinstance(aug["enabled"], bool):
        raise ConfigError(f"{file}: augmentation.enabled must be true or false")
    if not isinstance(aug["steps"], int) or isinstance(aug["steps"], bool) or aug["steps"] < 1:
        raise ConfigError(f"{file}: augmentation.steps must be an integer >= 1")
    augmentation = Augmentation(
        method=aug["method"],
        epsilon=_num(aug["epsilon"], "augmentation.epsilon", file, lo_open=True),
        momentum=_num(aug["momentum"], "augmentation.momentum", file),
        steps=aug["steps"],
        enabled=aug["enabled"],
    )
    return Profile(
        name=name,
        description=raw["description"],
        explicit_limits=MappingProxyType(limits) if limits is not None else None,
        base_limit=_num(raw["base_limit"], "base_limit", file, lo_open=True),
        usage_ratios=MappingProxyType(ratios),
        gamma=_num(raw["gamma"], "gamma", file),
        augmentation=augmentation,
        simulator=MappingProxyType(_parse_simulator(raw["simulator"], ratios, file)),
        source=file,
    )


def _parse_simulator(sim: Any, ratios: Mapping[str, float], file: str) -> dict[str, Any]:
    _keys(sim, "simulator", file, _SIM_KEYS)
    cats = _keys(sim["categories"], "simulator.categories", file, tuple(ratios))
    parsed = {c: _parse_category(cats[c], f"simulator.categories.{c}", file) for c in ratios}
    scale_spread = _num(sim["scale_spread"], "simulator.scale_spread", file, hi=2.0)
    return {"scale_spread": scale_spread, "categories": MappingProxyType(parsed)}


def _parse_category(cfg: Any, where: str, file: str) -> Mapping[str, Any]:
    _keys(cfg, where, file, _CAT_REQUIRED, tuple(_CAT_DEFAULTS))
    out: dict[str, Any] = dict(_CAT_DEFAULTS) | dict(cfg)
    out["base_kwh"] = _num(cfg["base_kwh"], f"{where}.base_kwh", file, lo_open=True)
    levels = cfg["levels"]
    if not isinstance(levels, dict) or not levels or any(len(k) != 1 for k in levels):
        raise ConfigError(f"{file}: {where}.levels must map one-character codes to levels")
    out["levels"] = {k: _num(v, f"{where}.levels.{k}", file) for k, v in levels.items()}
    for day in ("weekday", "weekend"):
        codes = cfg[day]
        if not isinstance(codes, str) or len(codes) != 24:
            raise ConfigError(f"{file}: {where}.{day} must be a string of 24 level codes")
        bad = sorted(set(codes) - set(levels))
        if bad:
            raise ConfigError(f"{file}: {where}.{day} uses code {bad[0]!r} not in levels")
    for key in ("weekend_factor", "noise", "day_variation", "wander"):
        out[key] = _num(out[key], f"{where}.{key}", file, hi=10.0)
    if out["season"] is not None:
        season = out["season"]
        if not isinstance(season, list) or len(season) != 12:
            raise ConfigError(f"{file}: {where}.season must be a list of 12 monthly factors")
        out["season"] = [_num(v, f"{where}.season[{i}]", file) for i, v in enumerate(season)]
    if out["cycle"] is not None:
        cyc = _keys(out["cycle"], f"{where}.cycle", file, _CYCLE_KEYS)
        out["cycle"] = {
            "period_min": _num(cyc["period_min"], f"{where}.cycle.period_min", file, lo=2.0),
            "duty": _num(cyc["duty"], f"{where}.cycle.duty", file, lo_open=True, hi=1.0),
            "amplitude": _num(cyc["amplitude"], f"{where}.cycle.amplitude", file, hi=1.0),
        }
    if out["intermittent"] is not None:
        itm = _keys(out["intermittent"], f"{where}.intermittent", file, _INTERMITTENT_KEYS)
        lo_h = _num(itm["min_hours"], f"{where}.intermittent.min_hours", file, lo=1.0, hi=24.0)
        out["intermittent"] = {
            "day_prob": _num(itm["day_prob"], f"{where}.intermittent.day_prob", file, hi=1.0),
            "min_hours": lo_h,
            "max_hours": _num(itm["max_hours"], f"{where}.intermittent.max_hours", file,
                              lo=lo_h, hi=24.0),
            "idle": _num(itm["idle"], f"{where}.intermittent.idle", file),
        }
    return MappingProxyType(out)
