"""stream_app.models finds the shipped bundle; `meterwatch --version` names the package's version.

The installed-wheel side of both is tests/test_packaging.py (slow: it builds and installs)."""

from __future__ import annotations

from pathlib import Path

import stream_app
from stream_app.cli import DEFAULT_BUNDLE, main
from stream_app.core.model_bundle import Bundle
from stream_app.models import bundled, default_bundle

ROOT = Path(__file__).resolve().parents[1]


def test_in_a_checkout_the_default_bundle_is_the_repositorys():
    assert default_bundle() == ROOT / "onnx_models" / "default"
    assert DEFAULT_BUNDLE == default_bundle()
    assert Bundle.load(default_bundle()).version.startswith("default@")  # verified, loads


def test_an_unknown_bundle_name_is_no_folder():
    assert not bundled("no-such-bundle").exists()


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"meterwatch {stream_app.__version__}"
