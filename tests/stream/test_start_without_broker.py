"""Worker start-up without a broker: an unreachable broker ends it with one line and exit 2, by
`meterwatch worker` and by Faust's own command line; importing the app module builds nothing."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stream_app.devtools.brokers import free_port

DEFAULT_BUNDLE = Path(__file__).resolve().parents[2] / "onnx_models" / "default"
FAUST = Path(sys.executable).with_name("faust")


def worker_env(tmp_path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MW_", "KAFKA_"))}
    env.update({"KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",  # nothing listens
                "MW_MODEL_DIR": str(DEFAULT_BUNDLE), "MW_DATA_DIR": str(tmp_path / "data"),
                "MW_BROKER_WAIT_S": "2", **extra})
    return env


@pytest.mark.parametrize("command", ["meterwatch", "faust", "faust -A stream_app.app"])
def test_an_unreachable_broker_stops_the_worker_with_one_line(tmp_path, command):
    app = "stream_app.app" if command.endswith("stream_app.app") else "stream_app.stream.app"
    argv = ([sys.executable, "-m", "stream_app.cli", "worker"] if command == "meterwatch"
            else [str(FAUST), "-A", app, "worker", "-l", "info"])
    if command != "meterwatch" and not FAUST.exists():
        pytest.skip(f"no faust command beside {sys.executable}")
    started = time.monotonic()
    # librdkafka's debug log asked for: the broker check stays silent all the same
    env = worker_env(tmp_path, KAFKA_CONFIG_LOG_LEVEL="7", KAFKA_CONFIG_DEBUG="broker")
    done = subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, check=False)
    took = time.monotonic() - started
    print(f"\n{command}: exit {done.returncode} in {took:.1f} s: {done.stderr.strip()}")
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith("meterwatch worker: error: no Kafka broker answered at 127.0.0.1:")
    bootstrap = lines[0].split(" answered at ", 1)[1].split(" ", 1)[0]
    # stdout said what it waited for, before the error
    assert f"waiting for the broker at {bootstrap} (up to 2 s)" in done.stdout, done.stdout
    assert "within 2 s (MW_BROKER_WAIT_S" in lines[0]
    assert "FAIL" not in done.stdout + done.stderr  # no librdkafka line per attempt
    assert took < 30
    assert not list(tmp_path.glob("*-data"))  # nothing in the working directory


def test_importing_the_app_module_builds_nothing(tmp_path):
    """`faust -A` builds the app when it asks for `app`; the import alone reads no setting,
    loads no bundle and touches no broker (here: none reachable, no bundle at all)."""
    probe = ("import stream_app.app, stream_app.stream.app as m, stream_app.stream.worker as w\n"
             "assert 'app' not in vars(m) and 'app' not in vars(stream_app.app)\n"
             "print(m.STATE_TABLE)\n")
    env = worker_env(tmp_path, MW_MODEL_DIR=str(tmp_path / "no-bundle"), MW_NOT_A_SETTING="1")
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0 and done.stdout.strip() == "meter-state", done.stderr
