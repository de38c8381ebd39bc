"""Per-usage-category Z-score limits: the last step of the decision.

A reading's anomaly score (Isolation Forest, higher = more anomalous) is turned into a z-score
against the score distribution of normal training windows; the reading is flagged when that
z-score exceeds the limit of the meter's usage category.

Calibration from data (the study gives the metal values but not its formula), ours:

    r_bar = sum_c r_c * r_c                       (usage-weighted average of the expected ratios)
    limit_c = clip(base * (r_c / r_bar) ** gamma, lo, hi)

where r_c is the category's expected share of the company's consumption (sum_c r_c = 1), `base`
is the global limit chosen on validation data and gamma (default 0.1) says how much a category's
share moves its limit. A category that carries most of the load (industrial) keeps a limit near
`base`; a category with a tiny, irregular share (agricultural) gets a lower limit, because its few
readings leave a small z-score more room to be meaningful. Profiles may state limits directly
(the metal profile carries the study's 3.0 / 3.1 / 2.3 / 1.7).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from stream_app.core.errors import ConfigError

CATEGORIES: tuple[str, ...] = ("industrial", "general", "late_night", "agricultural")

# The study's optimal limits for the metal industry.
METAL_LIMITS: Mapping[str, float] = {
    "industrial": 3.0,
    "general": 3.1,
    "late_night": 2.3,
    "agricultural": 1.7,
}

LIMIT_BOUNDS = (1.0, 6.0)  # outside this a z-score limit is either noise or never reached


def calibrate_limits(
    base: float,
    usage_ratios: Mapping[str, float],
    gamma: float = 0.1,
    bounds: tuple[float, float] = LIMIT_BOUNDS,
) -> dict[str, float]:
    """Limits per category from the weighted average of expected usage ratios (formula above)."""
    if not usage_ratios:
        raise ConfigError("usage_ratios is empty")
    ratios = {c: float(r) for c, r in usage_ratios.items()}
    if any(r <= 0 or not np.isfinite(r) for r in ratios.values()):
        raise ConfigError(f"usage ratios must be positive and finite, got {ratios}")
    total = sum(ratios.values())
    shares = {c: r / total for c, r in ratios.items()}
    r_bar = sum(s * s for s in shares.values())
    lo, hi = bounds
    return {c: float(np.clip(base * (s / r_bar) ** gamma, lo, hi)) for c, s in shares.items()}


@dataclass(frozen=True)
class CategoryLimits:
    """Z-score limit per usage category, plus the normal score distribution they refer to."""

    limits: Mapping[str, float]
    score_mean: float
    score_std: float
    # per category (mean, std) of the normal score, where training had meters of that category;
    # meters differ by category far more than within one (an irrigation pump vs a rolling mill)
    category_stats: Mapping[str, tuple[float, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.limits:
            raise ConfigError("no category limits given")
        for category, limit in self.limits.items():
            if not np.isfinite(limit) or limit <= 0:
                raise ConfigError(f"limit for category {category!r} must be > 0, got {limit}")
        stds = [self.score_std] + [std for _, std in self.category_stats.values()]
        if not all(np.isfinite(std) and std > 0 for std in stds):
            raise ConfigError(f"score standard deviations must be > 0, got {stds}")

    def zscores(self, scores: np.ndarray, categories: Iterable[str] | None = None) -> np.ndarray:
        """z of each score against the normal scores of its category (else of all meters)."""
        scores = np.asarray(scores, dtype=np.float64)
        if categories is None or not self.category_stats:
            return (scores - self.score_mean) / self.score_std
        stats = [self.category_stats.get(c, (self.score_mean, self.score_std))
                 for c in categories]
        mean, std = np.array(stats, dtype=np.float64).reshape(-1, 2).T
        return (scores - mean) / std

    def limit(self, category: str) -> float:
        try:
            return float(self.limits[category])
        except KeyError:
            raise ConfigError(
                f"unknown category {category!r}; known: {', '.join(sorted(self.limits))}"
            ) from None

    def limits_for(self, categories: list[str] | tuple[str, ...]) -> np.ndarray:
        return np.array([self.limit(c) for c in categories], dtype=np.float64)

    def decide(self, scores: np.ndarray,
               categories: Iterable[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(z-scores, limits, flags) for scores of readings in the given categories."""
        categories = list(categories)
        z = self.zscores(scores, categories)
        limits = self.limits_for(categories)
        return z, limits, z > limits
