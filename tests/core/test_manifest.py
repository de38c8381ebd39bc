"""The manifest, defined once: parsed, validated and written by stream_app.core.manifest.

Every case starts from the shipped default bundle's manifest.json and changes one thing; each
refusal is one BundleError line naming the field.
"""

import copy
import json
from pathlib import Path
from types import MappingProxyType

import pytest

from stream_app.core.errors import BundleError
from stream_app.core.evidence import MeterProfile
from stream_app.core.manifest import MAX_BYTES, MAX_DEPTH, Manifest
from stream_app.core.preprocessing import Normaliser

SHIPPED = Path(__file__).resolve().parents[2] / "onnx_models" / "default" / "manifest.json"


@pytest.fixture(scope="module")
def shipped_text():
    return SHIPPED.read_text(encoding="utf-8")


@pytest.fixture
def raw(shipped_text):
    return json.loads(shipped_text)


def refusal(document) -> str:
    """The one-line message with which a manifest document is refused."""
    text = document if isinstance(document, str | bytes) else json.dumps(document)
    with pytest.raises(BundleError) as info:
        Manifest.from_json(text)
    message = str(info.value)
    assert "\n" not in message and len(message) < 400, message
    return message


def test_the_shipped_manifest_reads_by_attribute_and_writes_back_the_same_values(shipped_text):
    m = Manifest.from_json(shipped_text)
    assert m.window_sizes == (96, 24, 16) and m.models == ("cnn_gru", "lstm")
    assert m.decision.limits["late_night"] == 2.3 and m.decision.calibration == "profile"
    assert m.dtw.band is None and m.dtw.measure == "dtw"
    assert m.files["forest.npz"].bytes == 798830 and m.files["lstm_w16.onnx"].opset == 17
    assert isinstance(m.normalisation.meters["steel"], Normaliser)
    assert isinstance(m.evidence.meters["steel"], MeterProfile)
    assert m.evidence.meters["steel"].median.shape == (168,)
    assert m.training.data[0].readings == 35_040 and m.training.data[0].repairs == ()
    assert json.loads(m.to_json()) == json.loads(shipped_text)  # every value kept


def test_the_manifest_is_frozen_all_the_way_down(shipped_text):
    m = Manifest.from_json(shipped_text)
    with pytest.raises(AttributeError):
        m.name = "other"
    with pytest.raises(TypeError):
        m.decision.limits["industrial"] = 9.0
    with pytest.raises(TypeError):
        m.training.config["epochs"] = 1
    assert isinstance(m.files["cnn_gru_w96.onnx"].config, MappingProxyType)


def test_new_limits_come_with_their_audit_entry(shipped_text):
    m = Manifest.from_json(shipped_text)
    limits = {**m.decision.limits, "industrial": 4.2}
    changed = m.with_limits(limits, {"at": "2026-12-02T00:00:00+00:00", "by": "ops",
                                     "action": "recalibrate_limits"})
    again = Manifest.from_json(changed.to_json())
    assert again.decision.limits["industrial"] == 4.2 and again.audit[-1]["by"] == "ops"
    assert m.decision.limits["industrial"] == 3.0  # the original is untouched


def _drop(path):
    def change(m):
        *parents, last = path
        node = m
        for key in parents:
            node = node[key]
        del node[last]
    return change


def _set(path, value):
    def change(m):
        *parents, last = path
        node = m
        for key in parents:
            node = node[key]
        node[last] = value
    return change


@pytest.mark.parametrize("change, expected", [
    (_drop(["files", "forest.npz", "bytes"]), """lacks field 'files["forest.npz"].bytes'"""),
    (_drop(["decision", "limits"]), "lacks field 'decision.limits'"),
    (_drop(["dtw", "band"]), "lacks field 'dtw.band'"),
    (_drop(["feature_stats", "median"]), "lacks field 'feature_stats.median'"),
    (_drop(["evidence", "meters", "steel", "ratio_limit"]),
     """lacks field 'evidence.meters["steel"].ratio_limit'"""),
    (_drop(["normalisation", "meters", "steel", "std"]),
     """lacks field 'normalisation.meters["steel"].std'"""),
    (_drop(["training", "data", 0, "meter_id"]), "lacks field 'training.data[0].meter_id'"),
    (_drop(["evidence"]), "lacks field 'evidence'"),
    (_set(["surprise"], 1), "unknown field 'surprise'"),
    (_set(["dtw", "bandwidth"], 3), "unknown field 'dtw.bandwidth'"),
    (_set(["evidence", "meters", "steel", "colour"], "red"),
     """unknown field 'evidence.meters["steel"].colour'"""),
    (_set(["files", "forest.npz", "bytes"], "798830"),
     """'files["forest.npz"].bytes' has the wrong type"""),
    (_set(["window_sizes"], "24"), "'window_sizes' has the wrong type"),
    (_set(["dtw", "normalise"], 1), "'dtw.normalise' has the wrong type"),
    (_set(["warmup_readings"], True), "'warmup_readings' has the wrong type"),
    (_set(["decision", "score_mean"], None), "'decision.score_mean' has the wrong type"),
    (_set(["decision"], []), "'decision' has the wrong type"),
    (_set(["dtw", "measure"], "mae"), "'dtw' or 'mse'"),
    (_set(["schema_version"], 99), "schema_version 99 is not supported"),
    (_set(["decision", "limits"], {"industrial": 3.0}), "no limit for category 'general'"),
    (_set(["decision", "limits", "general"], 0), """'decision.limits["general"]' must be > 0"""),
    (_set(["decision", "score_std"], 0.0), "'decision.score_std' must be > 0"),
    (_set(["normalisation", "meters", "steel", "std"], -1.0),
     """'normalisation.meters["steel"]': invalid normalisation"""),
    (_set(["feature_stats", "scale", 3], 0.0), "'feature_stats.scale' must be > 0"),
    (_set(["feature_stats", "median"], [0.0]), "'feature_stats' must hold 12 values"),
    (_set(["evidence", "meters", "steel", "median"], [1.0] * 3),
     """'evidence.meters["steel"]': a meter profile needs 168 finite values"""),
    (_set(["evidence", "recent_readings"], 97), "'evidence.recent_readings' 97 is outside"),
    (_set(["models"], ["cnn_gru", "../outside/models/cnn_gru"]), "'models' must be distinct kinds"),
    (_set(["window_sizes"], [96, 24, 0]), "'window_sizes' must be distinct sizes"),
    (_set(["interval_s"], 0), "'interval_s' must be > 0"),
])
def test_a_bad_field_is_one_line_naming_it(raw, change, expected):
    change(raw)
    assert expected in refusal(raw)


@pytest.mark.parametrize("name", ["../../../../etc/passwd", "/etc/passwd", "sub/forest.npz",
                                  "sub\\forest.npz", "..", ".hidden", "C:forest.npz", ""])
def test_a_file_entry_is_a_plain_name_inside_the_bundle(raw, name):
    raw["files"][name] = copy.deepcopy(raw["files"]["forest.npz"])
    assert "is not a plain file name inside the bundle" in refusal(raw)


@pytest.mark.parametrize("change, expected", [
    (_set(["files", "lstm_w16.onnx", "role"], "script"), "role' must be one of"),
    (_set(["files", "lstm_w16.onnx", "model"], "gpt"), "is not the ONNX file of one of"),
    (_set(["files", "lstm_w16.onnx", "window"], 24), "is not the ONNX file of one of"),
    (_set(["files", "lstm_w16.onnx", "sha256"], "abc"), "must be 64 lower-case hex digits"),
    (_drop(["files", "lstm_w16.onnx"]), "lacks model files: ['lstm_w16.onnx']"),
])
def test_file_entries_are_exactly_the_files_the_models_imply(raw, change, expected):
    change(raw)
    assert expected in refusal(raw)


def test_a_meter_id_in_a_path_stays_on_one_line(raw):
    raw["normalisation"]["meters"]["a\nb" + "x" * 500] = {"mean": 1.0}
    message = refusal(raw)
    assert 'normalisation.meters["a\\nbxxx' in message and "lacks field" in message


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_every_number_is_finite(shipped_text, number):
    text = shipped_text.replace('"mean": 27.386892408675802', f'"mean": {number}', 1)
    assert text != shipped_text
    assert "is not valid JSON" in refusal(text)


def test_a_duplicated_field_is_refused(shipped_text):
    text = shipped_text.replace('"version": "2",', '"version": "2", "version": "3",', 1)
    assert 'field "version" appears twice' in refusal(text)


def test_a_manifest_nested_100000_deep_is_one_line():
    assert "nested more than" in refusal("[" * 100_000 + "]" * 100_000)
    assert "nested more than" in refusal('{"a":' * 100_000 + "1" + "}" * 100_000)


def test_free_form_records_are_bounded_in_depth(raw):
    deep = 1
    for _ in range(MAX_DEPTH + 1):
        deep = {"a": deep}
    raw["training"]["metrics"]["deep"] = deep
    assert f"nested more than {MAX_DEPTH} levels deep" in refusal(raw)


def test_a_manifest_over_the_size_limit_is_refused_unparsed():
    assert "more than its limit" in refusal(b" " * (MAX_BYTES + 1))


@pytest.mark.parametrize("document, expected", [
    ("[]", "'root' has the wrong type"),
    ('"manifest"', "'root' has the wrong type"),
    ("{not json", "is not valid JSON"),
    (b"\xff\xfe{}", "is not valid JSON"),
    ('{"schema_version": 1}', "lacks field 'name'"),
])
def test_a_document_that_is_no_manifest_is_one_line(document, expected):
    assert expected in refusal(document)
