"""A worker whose bundle is refused does not start: exit 2, one line, no traceback, no broker.

The bundle is checked before the first broker call, so the broker address is one that nothing
listens on: a refusal must come before any connection is tried.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SHIPPED = Path(__file__).resolve().parents[2] / "onnx_models" / "default"


def _drop_bytes(path):
    manifest = json.loads((path / "manifest.json").read_text())
    del manifest["files"]["forest.npz"]["bytes"]
    (path / "manifest.json").write_text(json.dumps(manifest))


def _deep(path):
    (path / "manifest.json").write_text("[" * 100_000 + "]" * 100_000)


def _escape(path):
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["files"]["../../../../etc/passwd"] = manifest["files"].pop("forest.npz")
    (path / "manifest.json").write_text(json.dumps(manifest))


def _linked_manifest(path):
    outside = path.parent / "manifest-elsewhere.json"
    (path / "manifest.json").rename(outside)
    (path / "manifest.json").symlink_to(outside)


def _start_worker(tmp_path, **settings) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MW_", "KAFKA_"))}
    env.update(KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:9", **settings)
    return subprocess.run([sys.executable, "-m", "stream_app.cli", "worker"], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize("damage, named", [
    (_drop_bytes, "lacks field"), (_deep, "nested more than"),
    (_escape, "is not a plain file name"), (_linked_manifest, "is a symbolic link"),
], ids=["no-bytes", "deep", "path-escape", "linked-manifest"])
@pytest.mark.parametrize("layout", ["model_dir", "model_root"])
def test_a_refused_bundle_stops_the_worker_at_start_with_one_line(tmp_path, damage, named, layout):
    root = tmp_path / "models"
    bundle = root / "default"
    shutil.copytree(SHIPPED, bundle)
    damage(bundle)
    setting = {"MW_MODEL_DIR": str(bundle)} if layout == "model_dir" else {"MW_MODEL_ROOT": str(root)}
    done = _start_worker(tmp_path, **setting)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith("meterwatch worker: error:") and named in lines[0], lines[0]
