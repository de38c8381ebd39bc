"""A meter's state: its bytes round-trip, the first layout is still read, a newer one refused."""

import orjson
import pytest

from stream_app.core.meter_state import STATE_VERSION, MeterState

HISTORY = {"last_ts": 1_736_121_600, "values": [1.5, 2.0, 2.5], "filled": [0, 1, 0],
           "normaliser": None, "warm_values": [1.5, 2.0, 2.5], "warm_end_ts": None}


def test_bytes_round_trip_and_say_their_version():
    state = MeterState(HISTORY, 900, "industrial", alert={"open": None}, offsets={"t:1": 41},
                       calibration="abc", calibration_bundle="7")
    raw = state.to_bytes()
    assert orjson.loads(raw)["v"] == STATE_VERSION == 2
    assert MeterState.from_bytes(raw) == state


def test_the_first_layout_is_read_as_the_same_state():
    legacy = orjson.dumps({"h": HISTORY, "a": None, "c": "general", "iv": 600, "o": {"t:0": 3},
                           "k": None, "kb": "1"})
    state = MeterState.from_bytes(legacy)
    assert (state.history, state.interval_s, state.category) == (HISTORY, 600, "general")
    assert (state.offsets, state.calibration, state.calibration_bundle) == ({"t:0": 3}, None, "1")
    assert MeterState.from_bytes(state.to_bytes()) == state


def test_kept_readings_are_the_history_on_its_grid():
    state = MeterState(HISTORY, 900, "industrial")
    assert state.last_reading_ms == 1_736_121_600_000
    assert state.kept_readings() == [[1_736_119_800_000, 1.5], [1_736_120_700_000, 2.0],
                                     [1_736_121_600_000, 2.5]]


@pytest.mark.parametrize(("raw", "needle"), [
    (b'{"v": 3, "history": {}}', "meter state version 3: this meterwatch reads 1 and 2"),
    (b"[1, 2]", "a meter state is a JSON object"),
])
def test_what_cannot_be_read_is_refused_by_name(raw, needle):
    with pytest.raises(ValueError, match=needle):
        MeterState.from_bytes(raw)
