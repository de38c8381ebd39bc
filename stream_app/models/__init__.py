"""The model bundles that ship with meterwatch: `default` (the repository's onnx_models/default).

In a wheel the bundle is package data of this package: pyproject.toml maps onnx_models/default to
`stream_app/models/default` at build time, so `importlib.resources` finds it wherever the wheel
is installed. In a source checkout (an editable install or PYTHONPATH) there is no copy: the
bundle is the repository's onnx_models/default itself, because setuptools' editable finder
cannot expose a data folder without `__init__.py` under another package's name.

Imports nothing of the project: every wing (CLI, worker settings, devtools) may ask it.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

DEFAULT = "default"
_SOURCE_TREE = Path(__file__).resolve().parents[2] / "onnx_models"  # a checkout's bundles


def bundled(name: str = DEFAULT) -> Path:
    """Folder of the shipped bundle `name`: the wheel's package data, else the checkout's."""
    packaged = resources.files(__name__) / name
    if packaged.is_dir():  # an installed wheel: a real folder in site-packages
        return Path(str(packaged))
    return _SOURCE_TREE / name


def default_bundle() -> Path:
    """The default bundle (UCI steel plant): what `--model` and MW_MODEL_DIR default to."""
    return bundled(DEFAULT)
