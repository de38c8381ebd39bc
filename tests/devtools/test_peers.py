"""The quality benchmark's peer detectors: a spike on a sine scores above normal readings,
and every peer's threshold is the 99.5th percentile of its own training scores."""

import sys
from pathlib import Path

import numpy as np
import pytest

# benchmarks/ is not an installed package: import it from the repository root.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.peers import (
    HalfSpaceTreesPeer,
    IsolationForestPeer,
    RollingZPeer,
    SeasonalNaivePeer,
    TimeOfWeekZPeer,
    make_peers,
    quantile_threshold,
    week_phase,
)
from stream_app.core.series import MeterSeries
from stream_app.devtools.anomalies import inject_one

PER_DAY = 24
MONDAY = 1736121600  # 2025-01-06T00:00:00+00:00


def _sine(days: int, seed: int) -> np.ndarray:
    t = np.arange(days * PER_DAY)
    rng = np.random.default_rng(seed)
    return 10 + 5 * np.sin(2 * np.pi * t / PER_DAY) + rng.normal(0, 0.2, len(t))


@pytest.mark.parametrize("peer", [p for p in make_peers(PER_DAY)
                                  if not isinstance(p, IsolationForestPeer)], ids=lambda p: p.name)
def test_an_obvious_spike_scores_above_every_normal_reading(peer):
    train, test = _sine(30, 0), _sine(10, 1)
    spike = 5 * PER_DAY + 7  # an hour near the top of the sine
    test[spike] += 25.0
    peer.fit(train)
    scores = peer.score(np.concatenate([train, test]), start=len(train))
    assert scores.shape == test.shape
    normal = np.delete(scores, [spike, spike + 1])  # the reading after a spike falls back
    assert scores[spike] > normal.max()
    assert scores[spike] > peer.threshold_


def test_isolation_forest_on_windows_flags_a_stuck_day_above_every_normal_window():
    # A single spike is NOT enough for it: a value beyond the training range lands in the same
    # leaf as the largest training values, one coordinate of 24 (see docs/EVALUATION.md). A
    # day frozen at the mean changes every coordinate of the windows that hold it.
    train, test = _sine(30, 0), _sine(10, 1)
    day = slice(5 * PER_DAY, 6 * PER_DAY)
    test[day] = 10.0
    peer = IsolationForestPeer(PER_DAY).fit(train)
    scores = peer.score(np.concatenate([train, test]), start=len(train))
    inside = scores[6 * PER_DAY - 1]  # the window that is wholly the stuck day
    touched = np.zeros(len(test), bool)
    touched[5 * PER_DAY:7 * PER_DAY - 1] = True  # windows holding any stuck reading
    assert inside > scores[~touched].max()
    assert inside > peer.threshold_


def test_scores_are_higher_for_more_anomalous_readings_not_lower():
    train = _sine(20, 2)
    peer = IsolationForestPeer(PER_DAY).fit(train)
    bumped = train.copy()
    bumped[-1] += 30.0
    assert peer.score(bumped)[-1] > peer.score(train)[-1]


def test_quantile_threshold_is_the_995th_percentile_by_hand():
    scores = np.arange(1, 1001, dtype=float)  # 1..1000
    # numpy's linear rule: position 0.995 * 999 = 994.005 -> 995 + 0.005 * (996 - 995)
    assert quantile_threshold(scores) == pytest.approx(995.005)
    assert quantile_threshold(np.r_[scores, np.nan]) == pytest.approx(995.005)
    assert quantile_threshold(scores, 0.5) == pytest.approx(500.5)
    with pytest.raises(ValueError):
        quantile_threshold(np.array([np.nan]))
    with pytest.raises(ValueError):
        quantile_threshold(scores, 1.0)


def test_fit_sets_the_threshold_from_the_peers_own_training_scores():
    train = _sine(20, 3)
    iso = IsolationForestPeer(PER_DAY).fit(train)
    whole = iso.score(train)[PER_DAY - 1:]  # the edge-padded first windows are not fitted on
    assert iso.threshold_ == pytest.approx(quantile_threshold(whole))
    rz = RollingZPeer(PER_DAY).fit(train)
    assert rz.threshold_ == pytest.approx(quantile_threshold(rz.score(train)))
    # about 0.5 % of the training readings lie above it
    assert 0 < (rz.score(train) > rz.threshold_).mean() <= 0.01


def test_rolling_z_matches_a_naive_loop():
    v = _sine(6, 4)
    peer = RollingZPeer(PER_DAY).fit(v)
    d = np.diff(v, prepend=v[0])
    got = peer.score(v)
    for i in range(PER_DAY, len(v)):
        prev = d[i - PER_DAY:i]
        want = abs(d[i] - prev.mean()) / max(prev.std(), 0.1 * np.diff(v).std())
        assert got[i] == pytest.approx(want, rel=1e-6)


def test_half_space_trees_keeps_learning_while_it_scores():
    train = _sine(20, 5)  # longer than the trees' first reference window (250 readings)
    peer = HalfSpaceTreesPeer(PER_DAY, seed=1).fit(train)
    level = np.full(30 * PER_DAY, 18.0)  # a new constant level above the training range
    scores = peer.score(np.concatenate([train, level]), start=len(train))
    assert scores[:PER_DAY].mean() > scores[-PER_DAY:].mean()  # the new level becomes normal


def test_bad_input_is_refused():
    with pytest.raises(ValueError):
        RollingZPeer(PER_DAY).fit(np.array([1.0, np.nan, 2.0]))
    with pytest.raises(ValueError):
        IsolationForestPeer(PER_DAY).fit(np.array([]))
    short = _sine(6, 0)  # less than a week: no week-ago reading, not every slot of the week
    with pytest.raises(ValueError, match="one week"):
        SeasonalNaivePeer(PER_DAY).fit(short)
    with pytest.raises(ValueError, match="one week"):
        TimeOfWeekZPeer(PER_DAY).fit(short)


# ---- the calendar peers -------------------------------------------------------------------

def _plant(weeks: int, seed: int) -> np.ndarray:
    """Hourly, steel-like: ~60 kWh in the weekday shifts (06-22 h), ~3 kWh otherwise."""
    rng = np.random.default_rng(seed)
    t = np.arange(weeks * 7 * PER_DAY)
    hour, weekday = t % PER_DAY, (t // PER_DAY) % 7  # starts on a Monday
    busy = (weekday < 5) & (hour >= 6) & (hour < 22)
    return np.where(busy, 60.0, 3.0) * rng.lognormal(0.0, 0.05, len(t))


CALENDAR = [SeasonalNaivePeer, TimeOfWeekZPeer]


def test_make_peers_holds_the_calendar_peers_and_keeps_its_old_call():
    names = [p.name for p in make_peers(PER_DAY)]
    assert names == ["HalfSpaceTrees", "IsolationForest", "rolling z", "seasonal naive",
                     "time-of-week z"]
    assert make_peers(PER_DAY, seed=3, phase=5)[-1].phase == 5


@pytest.mark.parametrize("cls", CALENDAR, ids=lambda c: c.name)
def test_calendar_peers_refuse_to_score_before_fit(cls):
    with pytest.raises(RuntimeError, match="fit"):
        cls(PER_DAY).score(_plant(2, 0))


@pytest.mark.parametrize("cls", CALENDAR, ids=lambda c: c.name)
def test_a_night_spike_scores_above_its_neighbours_and_the_threshold(cls):
    train, test = _plant(6, 0), _plant(3, 1)
    spike = 9 * PER_DAY + 2  # Wednesday of the second test week, 02:00 (idle, ~3 kWh)
    test[spike] += 15.0  # small beside the day shift's 60 kWh, big for the night
    peer = cls(PER_DAY).fit(train)
    scores = peer.score(np.concatenate([train, test]), start=len(train))
    assert scores.shape == test.shape
    near = np.r_[scores[spike - PER_DAY:spike], scores[spike + 1:spike + PER_DAY]]
    assert scores[spike] > near.max()
    assert scores[spike] > peer.threshold_
    assert scores[spike] > 10 * np.median(scores)


@pytest.mark.parametrize("cls", CALENDAR, ids=lambda c: c.name)
def test_a_weekday_that_runs_like_a_sunday_is_flagged(cls):
    # the injector's swap (stream_app.devtools.anomalies) on an hourly plant: the day shift disappears
    values = _plant(9, 2)
    series = MeterSeries("plant", "industrial", MONDAY + 3600 * np.arange(len(values)), values,
                         3600, None, [])
    day = 7 * 7 * PER_DAY + 1 * PER_DAY  # Tuesday of week 8
    swapped, _ = inject_one(series, "weekday_as_sunday", day, PER_DAY, np.random.default_rng(0))
    split = 6 * 7 * PER_DAY
    peer = cls(PER_DAY).fit(values[:split])
    scores = peer.score(swapped.values, start=split)
    inside, echo = np.zeros(len(scores), bool), np.zeros(len(scores), bool)
    inside[day - split:day - split + PER_DAY] = True
    echo[day - split + 7 * PER_DAY:day - split + 8 * PER_DAY] = True  # the Tuesday after
    hour = np.arange(len(scores)) % PER_DAY
    shift = inside & (hour >= 6) & (hour < 22)
    assert np.all(scores[shift] > peer.threshold_)  # every hour of the missing shift
    assert scores[shift].min() > scores[~inside & ~echo].max()
    # the seasonal-naive weakness: the normal Tuesday after compares with the swapped one
    echoed = scores[echo & (hour >= 6) & (hour < 22)]
    assert (echoed.min() > peer.threshold_) == (cls is SeasonalNaivePeer)


def test_seasonal_naive_is_the_week_ago_residual_over_its_robust_spread():
    train = _sine(21, 6)
    peer = SeasonalNaivePeer(PER_DAY).fit(train)
    lag = 7 * PER_DAY
    r = train[lag:] - train[:-lag]
    spread = 1.4826 * np.median(np.abs(r - np.median(r)))
    got = peer.score(train)
    np.testing.assert_allclose(got[lag:], np.abs(r) / spread)
    np.testing.assert_array_equal(got[:lag], 0.0)  # no week-ago reading: no evidence
    assert peer.threshold_ == pytest.approx(quantile_threshold(got[lag:]))
    np.testing.assert_allclose(peer.score(train, start=100), got[100:])


def test_time_of_week_z_is_the_slot_median_and_mad_by_hand():
    train = _plant(5, 3)
    peer = TimeOfWeekZPeer(PER_DAY).fit(train)
    week = 7 * PER_DAY
    slot = np.arange(len(train)) % week
    median = np.array([np.median(train[slot == k]) for k in range(week)])
    mad = np.array([np.median(np.abs(train[slot == k] - median[k])) for k in range(week)])
    res = train - median[slot]
    floor = max(0.25 * 1.4826 * np.median(np.abs(res - np.median(res))),
                0.01 * np.median(train))
    want = np.abs(train - median[slot]) / (1.4826 * mad[slot] + floor)
    np.testing.assert_allclose(peer.score(train), want)
    assert peer.threshold_ == pytest.approx(quantile_threshold(want))
    # the phase names the slots after the calendar and changes no score
    shifted = TimeOfWeekZPeer(PER_DAY, phase=50).fit(train)
    np.testing.assert_allclose(shifted.score(train), want)


def test_a_flat_training_meter_does_not_divide_by_zero():
    flat = np.full(3 * 7 * PER_DAY, 5.0)
    for cls in CALENDAR:
        peer = cls(PER_DAY).fit(flat)
        bumped = flat.copy()
        bumped[-3] = 6.0
        scores = peer.score(bumped)
        assert np.isfinite(scores).all() and scores[-3] > 0 and scores[-3] == scores.max()


def test_week_phase_counts_from_monday_midnight():
    assert week_phase(MONDAY, 900) == 0
    assert week_phase(MONDAY + 900, 900) == 1
    assert week_phase(MONDAY - 900, 900) == 7 * 96 - 1  # Sunday 23:45
    assert week_phase(MONDAY + 2 * 86400 + 3600, 3600) == 2 * 24 + 1  # Wednesday 01:00
