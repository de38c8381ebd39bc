"""The Faust and aiokafka internals the worker patches are still those the patches were written for.

The worker replaces or wraps private parts of faust-streaming 0.15.3 (exactly_once's one
transaction per worker, Tansu's fetch wait, fast resubscription, writes to a table under a
chosen event) and reads private attributes of aiokafka 0.14. pyproject.toml pins faust-streaming
at that version and bounds aiokafka; this test is what lets a new release in: it fingerprints
the source of every function a patch replaces or wraps and checks every private attribute the
patches use. When it fails, read the new code against the patch in stream_app/stream/, adapt the
patch, then update FINGERPRINTS and the pins together.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]

# sha256 (first 16 hex digits) of inspect.getsource() of each original, faust-streaming 0.15.3
FINGERPRINTS = {
    "faust.streams:Stream.take_events": "607d48aead118ba8",  # wrapped: batch in progress
    "faust.transport.consumer:TransactionManager.send": "b8d126be9f10fc69",  # replaced
    "faust.transport.consumer:TransactionManager.commit": "fbb29c3467ac8bfa",  # replaced
    "faust.transport.consumer:Consumer._commit_tps": "a20e230b05ae8b15",  # wrapped
    "faust.transport.drivers.aiokafka:AIOKafkaConsumerThread._create_worker_consumer":
        "c2701bfc3e6f6cad",  # wrapped: Tansu's fetch wait
    "faust.transport.conductor:Conductor._flag_changes": "43eb94e0048312fc",  # called
    "faust.transport.producer:ProducerBuffer._send_pending": "4a9d5f932b56bc68",  # wrapped:
    # exactly_once's commit counts the table writes on their way
}

# (module:object, text its source must contain): private attributes the patches read or set
ATTRIBUTES = [
    ("faust.transport.drivers.aiokafka:Producer", "self._transaction_producers"),
    ("faust.transport.drivers.aiokafka:Producer", "self._trn_locks"),
    ("faust.transport.producer:Producer", "self.buffer"),
    # the buffer's sending task looks the wrapped method up on the buffer
    ("faust.transport.producer:ProducerBuffer", "send_pending = self._send_pending"),
    ("faust.transport.conductor:Conductor", "_resubscribe_sleep_lock_seconds"),
    ("aiokafka:AIOKafkaProducer", "self._txn_manager"),
    ("aiokafka.producer.transaction_manager:TransactionManager", "def is_in_transaction"),
    ("aiokafka:AIOKafkaConsumer", "self._fetch_max_wait_ms"),
]

# Run in a fresh interpreter: a test that started a worker in this process has patched the
# very functions fingerprinted here (the patches apply once per process and stay).
_PROBE = """
import contextvars, hashlib, importlib, inspect, json, sys

def find(spec):
    module, _, path = spec.partition(":")
    obj = importlib.import_module(module)
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj

fingerprints, attributes = json.loads(sys.argv[1]), json.loads(sys.argv[2])
out = {"fingerprints": {}, "attributes": {}}
for spec in fingerprints:
    obj = find(spec)
    out["fingerprints"][spec] = (None if obj is None else
                                 hashlib.sha256(inspect.getsource(obj).encode()).hexdigest()[:16])
for spec, text in attributes:
    obj = find(spec)
    out["attributes"][f"{spec} {text}"] = obj is not None and text in inspect.getsource(obj)
import faust.streams
out["current_event"] = isinstance(getattr(faust.streams, "_current_event", None),
                                  contextvars.ContextVar)
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def probe() -> dict:
    done = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(list(FINGERPRINTS)),
                           json.dumps(ATTRIBUTES)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _declared(name: str) -> Requirement:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    found = [Requirement(r) for r in project["dependencies"] if Requirement(r).name == name]
    assert found, f"pyproject.toml declares no {name} requirement"
    return found[0]


@pytest.mark.parametrize("name", ["faust-streaming", "aiokafka"])
def test_installed_versions_are_those_declared(name):
    requirement = _declared(name)
    assert requirement.specifier.contains(version(name)), (
        f"{name} {version(name)} is installed, but pyproject.toml asks for {requirement}")


def test_faust_is_bounded_above():
    specifier = _declared("faust-streaming").specifier
    assert any(s.operator in ("==", "<", "<=", "~=") for s in specifier), (
        "faust-streaming needs an upper bound: the worker patches its internals")


@pytest.mark.parametrize("spec", sorted(FINGERPRINTS))
def test_patched_function_is_unchanged(probe, spec):
    found = probe["fingerprints"][spec]
    assert found is not None, (
        f"{spec} is gone in faust-streaming {version('faust-streaming')}: the worker's patch "
        "of it (stream_app/stream/) no longer applies")
    assert found == FINGERPRINTS[spec], (
        f"{spec} changed in faust-streaming {version('faust-streaming')} (fingerprint {found}, "
        f"the patch was written for {FINGERPRINTS[spec]}): re-read it against the patch in "
        "stream_app/stream/, adapt the patch, then update FINGERPRINTS and the pin")


@pytest.mark.parametrize("spec, text", ATTRIBUTES)
def test_private_attribute_is_still_there(probe, spec, text):
    assert probe["attributes"][f"{spec} {text}"], (
        f"{spec} no longer has {text!r} (faust-streaming {version('faust-streaming')}, aiokafka "
        f"{version('aiokafka')}): the worker's patches in stream_app/stream/ use it")


def test_current_event_is_a_context_variable(probe):
    assert probe["current_event"], (
        "faust.streams._current_event is no ContextVar any more: table writes under a chosen "
        "event (stream_app/stream/) would land in the wrong changelog partition")
