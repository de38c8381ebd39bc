"""train_bundle on real-world histories: gaps (segments), two weeks of one meter, fleets."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from stream_app.core.errors import InputError  # noqa: E402
from stream_app.core.profiles import load_profile  # noqa: E402
from stream_app.core.series import MeterSeries  # noqa: E402
from stream_app.devtools.simulator import simulate  # noqa: E402
from training.pipeline import TrainOptions, _prepare, _windows, train_bundle  # noqa: E402
from training.train import TrainConfig  # noqa: E402

QUICK = TrainConfig(epochs=1, max_train_windows=200)


def _options(**kw) -> TrainOptions:
    return TrainOptions(models=("lstm",), n_estimators=10, version="t", train=QUICK, **kw)


def _cut(s: MeterSeries, keep: np.ndarray, meter_id: str | None = None) -> MeterSeries:
    return MeterSeries(meter_id or s.meter_id, s.category, s.timestamps[keep], s.values[keep],
                       s.interval_s)


def _gappy(days: int, run: int, gap: int, seed: int = 0) -> MeterSeries:
    """`days` of one simulated meter with `gap` readings left out after every `run`."""
    [s] = simulate("metal", meters=1, days=days, seed=seed)
    return _cut(s, np.arange(len(s)) % (run + gap) < run)


def test_windows_never_span_a_gap():
    s = _gappy(20, 144, 6)
    [m] = _prepare([s])
    assert len(s.segments()) == int(m.segment[-1]) + 1 > 10
    owners: list[int] = []
    windows = _windows([m], 96, "train", 1, owners)
    starts = s.segment_starts()
    # a window of 96 fits 144 - 96 + 1 = 49 times in each whole run of the train part
    whole = sum(1 for a, b in s.segments() if b <= m.split)
    assert whole * 49 <= len(windows) <= (whole + 1) * 49
    values = m.values
    for w in windows[::17]:  # each window is a run of 96 consecutive readings of one segment
        at = [i for i in range(len(values) - 95) if np.array_equal(values[i:i + 96], w)]
        assert at and np.searchsorted(starts, at[0], "right") == np.searchsorted(
            starts, at[0] + 95, "right")


def test_two_weeks_of_one_meter_train_with_the_fft_windows(tmp_path):
    [s] = simulate("metal", meters=1, days=14, seed=4)
    assert len(s) == 1344
    bundle = train_bundle([s], tmp_path / "b", load_profile("metal"), _options())
    windows = bundle.manifest.training.metrics["windows"]
    assert windows["chosen_by"] == "fft" and bundle.window_sizes[0] == 96
    assert windows["cap"] >= 96 and windows["segments"] == {s.meter_id: 1}


def test_a_gappy_meter_caps_the_fft_windows_at_what_its_runs_train(tmp_path):
    s = _gappy(24, 144, 6, seed=2)  # runs of a day and a half: no room for two days' windows
    bundle = train_bundle([s], tmp_path / "b", load_profile("metal"), _options())
    windows = bundle.manifest.training.metrics["windows"]
    assert windows["cap"] == 72 and max(windows["fft_periods"]) == 96
    assert max(bundle.window_sizes) == 72
    assert any("split there" in r for r in bundle.manifest.training.data[0].repairs) is False


def test_a_short_meter_trains_beside_a_long_one(tmp_path):
    long, short = simulate("metal", meters=2, days=16, seed=5)
    short = _cut(short, np.arange(len(short)) < 300)  # three days
    bundle = train_bundle([long, short], tmp_path / "b", load_profile("metal"),
                          _options(window_sizes=(24, 16)))
    assert set(bundle.manifest.normalisation.meters) == {long.meter_id, short.meter_id}
    assert {m.meter_id: m.readings for m in bundle.manifest.training.data} == {
        long.meter_id: len(long), short.meter_id: 300}


def test_too_little_history_is_one_line_naming_the_minimum(tmp_path):
    [s] = simulate("metal", meters=1, days=10, seed=6)
    with pytest.raises(InputError) as info:
        train_bundle([s], tmp_path / "b", load_profile("metal"), _options())
    assert str(info.value) == (
        f"meter {s.meter_id} has 960 readings (10.0 days at 900 s): too few to train on; a "
        "bundle needs at least 1,344 readings (14 days) of one meter (meters with less train "
        "alongside it in one file)")


def test_a_given_window_longer_than_the_runs_is_refused_with_the_largest_that_fits(tmp_path):
    s = _gappy(24, 144, 6, seed=2)
    with pytest.raises(InputError) as info:
        train_bundle([s], tmp_path / "b", load_profile("metal"), _options(window_sizes=(96,)))
    assert str(info.value) == (
        "window 96 needs 192 consecutive readings (no gap) in the first 80% and in the last "
        "20% of one meter, 960 readings (10.0 days) at least: too few here, the data allows "
        "windows up to 72; choose smaller --windows")
