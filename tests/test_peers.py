"""The quality benchmark's peer detectors: a spike on a sine scores above normal readings,
and every peer's threshold is the 99.5th percentile of its own training scores."""

import sys
from pathlib import Path

import numpy as np
import pytest

# benchmarks/ is not an installed package: import it from the repository root.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.peers import (
    HalfSpaceTreesPeer,
    IsolationForestPeer,
    RollingZPeer,
    make_peers,
    quantile_threshold,
)

PER_DAY = 24


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
