"""Industry profiles: shipped files load, limits resolve, and bad files fail with the key."""

from __future__ import annotations

import json

import pytest

from stream_app.core.errors import ConfigError
from stream_app.core.profiles import PROFILE_DIR, list_profiles, load_profile
from stream_app.core.thresholds import CATEGORIES, METAL_LIMITS, calibrate_limits


def _raw(name: str = "generic") -> dict:
    return json.loads((PROFILE_DIR / f"{name}.json").read_text())


def _write(tmp_path, raw: dict):
    path = tmp_path / "custom.json"
    path.write_text(json.dumps(raw))
    return path


def test_shipped_profiles():
    assert list_profiles() == ["chemical", "food", "generic", "metal"]
    for name in list_profiles():
        profile = load_profile(name)
        assert profile.name == name and profile.categories == CATEGORIES
        assert sum(profile.usage_ratios.values()) == pytest.approx(1.0)
        assert set(profile.limits) == set(CATEGORIES)
        assert profile.augmentation.method == "mi_fgsm"
        assert profile.augmentation.epsilon == 0.25
        with pytest.raises(TypeError):  # frozen: a loaded profile cannot drift at run time
            profile.usage_ratios["industrial"] = 0.5


def test_metal_limits_are_the_studys_and_others_are_calibrated():
    assert load_profile("metal").limits == dict(METAL_LIMITS)
    chem = load_profile("chemical")
    assert chem.explicit_limits is None and chem.augmentation.enabled is True
    assert chem.limits == calibrate_limits(chem.base_limit, chem.usage_ratios, chem.gamma)
    # the dominant category keeps a limit near base, a tiny share gets a lower one
    assert chem.limits["industrial"] > chem.limits["agricultural"]


def test_load_by_path_and_unknown_name(tmp_path):
    assert load_profile(_write(tmp_path, _raw())).name == "generic"
    with pytest.raises(ConfigError, match="unknown profile 'steelworks'; known: chemical"):
        load_profile("steelworks")


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (lambda r: r.update(colour="red"), "custom.json: unknown key profile.colour"),
        (lambda r: r["augmentation"].update(eps=0.1), "unknown key augmentation.eps"),
        (lambda r: r["simulator"]["categories"]["general"].update(nosie=0.1),
         "unknown key simulator.categories.general.nosie"),
        (lambda r: r.pop("gamma"), "missing key profile.gamma"),
        (lambda r: r["simulator"]["categories"].pop("late_night"),
         "missing key simulator.categories.late_night"),
        (lambda r: r["usage_ratios"].update(industrial=0.9), "must sum to 1"),
        (lambda r: r["augmentation"].update(method="fgsm"), "augmentation.method"),
        (lambda r: r["simulator"]["categories"]["general"].update(weekday="o" * 23),
         "string of 24 level codes"),
        (lambda r: r["simulator"]["categories"]["general"].update(weekday="q" * 24),
         "uses code 'q' not in levels"),
        (lambda r: r["simulator"]["categories"]["general"].update(noise=-1),
         "noise must be a number >= 0"),
    ],
)
def test_bad_profiles_name_the_key(tmp_path, edit, needle):
    raw = _raw()
    edit(raw)
    with pytest.raises(ConfigError) as info:
        load_profile(_write(tmp_path, raw))
    assert needle in str(info.value)


def test_extra_category_needs_explicit_limits(tmp_path):
    raw = _raw("metal")
    raw["usage_ratios"].update(industrial=0.80, cooling=0.02)
    raw["simulator"]["categories"]["cooling"] = dict(raw["simulator"]["categories"]["general"])
    with pytest.raises(ConfigError, match="limits and usage_ratios must name the same"):
        load_profile(_write(tmp_path, raw))
    raw["limits"]["cooling"] = 2.0
    profile = load_profile(_write(tmp_path, raw))
    assert profile.categories == (*CATEGORIES, "cooling")
    assert profile.limits["cooling"] == 2.0
    raw["limits"] = None
    with pytest.raises(ConfigError, match="'cooling' is not one of industrial"):
        load_profile(_write(tmp_path, raw))


def test_invalid_json_is_a_config_error(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("{")
    with pytest.raises(ConfigError, match="broken.json is not valid JSON"):
        load_profile(path)
