"""Simulator: seeded, every category present, the profile's patterns, CSV round trip."""

from __future__ import annotations

import numpy as np
import pytest
from factories import START

from stream_app.core.errors import InputError
from stream_app.core.profiles import list_profiles, load_profile
from stream_app.core.thresholds import CATEGORIES
from stream_app.devtools.simulator import (
    CSV_HEADER,
    simulate,
    simulate_to_csv,
    simulate_with_events,
)
from stream_app.io.series_io import read_meter_csv


def _hourly(series, weekend: bool) -> np.ndarray:
    """Mean reading per hour of day over weekdays (or weekend days)."""
    days = (series.timestamps // 86400 + 3) % 7
    keep = (days >= 5) == weekend
    hours = (series.timestamps % 86400) // 3600
    return np.array([series.values[keep & (hours == h)].mean() for h in range(24)])


@pytest.mark.parametrize("name", list_profiles())
def test_every_profile_simulates_all_categories_on_the_grid(name):
    series = simulate(name, meters=5, days=3, seed=1)
    assert [s.category for s in series] == [*CATEGORIES, "industrial"]
    assert len({s.meter_id for s in series}) == 5
    for s in series:
        assert len(s) == 3 * 96 and s.interval_s == 900
        np.testing.assert_array_equal(s.timestamps, START + 900 * np.arange(3 * 96))
        assert s.values.dtype == np.float64 and s.values.min() >= 0.0
        assert np.all(np.isfinite(s.values)) and s.labels.sum() == 0


def test_deterministic_and_meter_k_independent_of_meter_count():
    a = simulate("metal", meters=4, days=2, seed=5)
    b = simulate("metal", meters=4, days=2, seed=5)
    c = simulate("metal", meters=6, days=2, seed=5)
    d = simulate("metal", meters=4, days=2, seed=6)
    for x, y, z in zip(a, b, c):
        np.testing.assert_array_equal(x.values, y.values)
        np.testing.assert_array_equal(x.values, z.values)
    assert not np.array_equal(a[0].values, d[0].values)


def test_metal_industrial_follows_shifts_and_load_classes():
    [ind] = simulate("metal", meters=1, days=28, seed=0)
    weekday, weekend = _hourly(ind, False), _hourly(ind, True)
    assert weekday[9:12].mean() > 5 * weekday[0:7].mean()  # maximum load vs light load at night
    assert weekday[12] < 0.6 * weekday[11]  # lunch break
    assert weekend[9:12].mean() < 0.6 * weekday[9:12].mean()  # reduced weekend


def test_late_night_is_concentrated_off_peak_and_general_in_office_hours():
    series = simulate("generic", meters=3, days=14, seed=2)
    general, late = series[1], series[2]
    hours = (late.timestamps % 86400) // 3600
    night = (hours >= 23) | (hours < 7)
    assert late.values[night].sum() > 0.9 * late.values.sum()
    office = _hourly(general, False)
    assert office[9:17].min() > 3 * office[0:6].max()


def test_chemical_is_continuous_and_food_cycles():
    [chem] = simulate("chemical", meters=1, days=14, seed=3)
    assert chem.values.std() / chem.values.mean() < 0.1
    assert chem.values.min() > 0.7 * chem.values.mean()
    [food] = simulate("food", meters=1, days=7, seed=3)
    night = ((food.timestamps % 86400) // 3600) < 5
    # refrigeration at night: compressor cycling spreads readings well beyond the 5 % noise
    cv = food.values[night].std() / food.values[night].mean()
    assert cv > 0.15
    [plain] = simulate(load_profile("food"), meters=1, days=7, seed=3)  # Profile object works
    np.testing.assert_array_equal(plain.values, food.values)


def test_agricultural_pump_is_intermittent_and_seasonal():
    summer = simulate("metal", meters=4, days=60, seed=4, start="2025-06-01T00:00:00+00:00")[3]
    winter = simulate("metal", meters=4, days=60, seed=4, start="2025-01-01T00:00:00+00:00")[3]
    on = summer.values > 0.2 * summer.values.max()
    assert 0.02 < on.mean() < 0.5  # runs a few hours on some days
    assert summer.values.sum() > 2 * winter.values.sum()


def test_anomalies_are_labelled_and_reported():
    series, events = simulate_with_events("metal", meters=4, days=30, seed=9,
                                          anomalies_per_meter=2.0)
    assert len(events) == 8
    for s in series:
        mine = [e for e in events if e.meter_id == s.meter_id]
        assert len(mine) == 2 and s.labels.sum() == sum(e.end - e.start for e in mine)
    only = simulate("metal", meters=2, days=20, seed=9, anomalies_per_meter=3, kinds=("spike",))
    assert all(s.labels.sum() <= 9 for s in only) and all(s.labels.sum() >= 3 for s in only)


def test_csv_round_trip(tmp_path):
    path = tmp_path / "sim.csv"
    series, events = simulate_to_csv(path, "food", 4, 8, seed=1, anomalies_per_meter=1.0)
    lines = path.read_text().splitlines()
    assert lines[0] == ",".join(CSV_HEADER) and len(lines) == 1 + 4 * 8 * 96
    kinds = {line.rsplit(",", 1)[1] for line in lines[1:]}
    assert kinds == {""} | {e.kind for e in events}
    back = read_meter_csv(path)
    assert [(s.meter_id, s.category) for s in back] == [(s.meter_id, s.category) for s in series]
    for a, b in zip(series, back):
        np.testing.assert_array_equal(a.timestamps, b.timestamps)
        np.testing.assert_array_equal(a.values, b.values)
        np.testing.assert_array_equal(a.labels, b.labels)


def test_bad_arguments_are_input_errors():
    with pytest.raises(InputError, match="meters and days"):
        simulate("metal", meters=0, days=1)
    with pytest.raises(InputError, match="interval"):
        simulate("metal", meters=1, days=1, interval_s=7 * 60)
    with pytest.raises(InputError, match="cannot parse start"):
        simulate("metal", meters=1, days=1, start="monday")
