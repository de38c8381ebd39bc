"""docker-compose.yml, the Dockerfile and deploy/ are wired together and to the code.

There is no Docker engine where the tests run: the files are parsed and their wiring checked
(every service's image, ports, volumes, healthcheck and restart policy; Kafka's listeners; the
worker's environment as the worker reads it; Prometheus' targets and rules; Grafana's
provisioning; every metric a dashboard query or an alert rule names is one the worker exports).
The file is also validated against the Compose Specification's JSON Schema
(tests/data/compose-spec.json, from the compose-spec project, Apache-2.0:
tests/data/compose-spec.LICENSE), and `docker compose config` runs where the client has the
compose plugin.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from stream_app.cli import parse_args
from stream_app.stream.metrics import WorkerMetrics
from stream_app.stream.settings import KafkaSettings, WorkerSettings

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
WORKERS = ("worker-1", "worker-2", "worker-3")
ALWAYS_ON = ("kafka", *WORKERS, "prometheus", "grafana")
OUR_IMAGE = re.compile(r"meterwatch:[\w.-]+$")


def interpolate(value):
    """Compose's `${VAR:-default}` / `${VAR}` / `$$` with no variable set: the defaults."""
    if isinstance(value, str):
        value = re.sub(r"\$\{(\w+)(?::?-([^}]*))?\}", lambda m: m.group(2) or "", value)
        return value.replace("$$", "$")
    if isinstance(value, dict):
        return {k: interpolate(v) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v) for v in value]
    return value


@pytest.fixture(scope="module")
def compose() -> dict:
    return interpolate(yaml.safe_load((ROOT / "docker-compose.yml").read_text()))


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def env_of(service: dict) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def published(service: dict) -> list[tuple[str, int, int]]:
    """(host address, host port, container port) of each `ports` entry."""
    out = []
    for entry in service.get("ports", []):
        parts = str(entry).split(":")
        assert len(parts) == 3, f"{entry}: publish on an explicit address (MW_PUBLISH_ADDRESS)"
        out.append((parts[0], int(parts[1]), int(parts[2])))
    return out


def mounts(service: dict) -> dict[str, str]:
    """container path -> source (a named volume, or a path relative to the repository)."""
    out = {}
    for entry in service.get("volumes", []):
        source, target, *_ = str(entry).split(":")
        out[target] = source
    return out


# --- services, images, restart, health ----------------------------------------------------


def test_services(services):
    assert set(ALWAYS_ON) <= set(services)
    assert services["worker-gpu"]["profiles"] == ["gpu"]
    assert services["producer"]["profiles"] == ["demo"]
    for name in ALWAYS_ON:
        assert "profiles" not in services[name], f"{name} must start with a plain `up`"
        assert "container_name" not in services[name]


def test_every_image_is_pinned_and_ours_is_built_once(services):
    builders: dict[str, list[str]] = {}
    for name, service in services.items():
        image = service.get("image")
        assert image, f"{name} has no image"
        if OUR_IMAGE.match(image):
            if "build" in service:
                builders.setdefault(image, []).append(name)
            else:  # reused: never pulled from a registry under a name that may be anyone's
                assert service.get("pull_policy") == "never", name
        else:
            assert ":" in image and not image.endswith(":latest"), f"{name}: pin {image}"
            assert "build" not in service
    ours = {s["image"] for s in services.values() if OUR_IMAGE.match(s["image"])}
    assert builders.keys() == ours and all(len(b) == 1 for b in builders.values()), builders
    assert builders[services["worker-1"]["image"]] == ["worker-1"]
    assert services["worker-1"]["build"]["target"] == "cpu"
    assert services["worker-gpu"]["build"]["target"] == "gpu"
    for name in (*WORKERS, "producer"):
        assert services[name]["image"] == services["worker-1"]["image"]


def test_long_running_services_restart_and_report_health(services):
    for name in (*ALWAYS_ON, "worker-gpu"):
        service = services[name]
        assert service.get("restart") in ("unless-stopped", "always"), name
        check = service.get("healthcheck", {})
        assert check.get("test") and check["test"][0] in ("CMD", "CMD-SHELL"), name
        assert check.get("interval") and check.get("retries"), name
    assert services["producer"]["restart"] == "no"  # it sends its readings once


def test_worker_health_check_asks_the_worker_page(services):
    for name in (*WORKERS, "worker-gpu"):
        service = services[name]
        port = env_of(service)["MW_WEB_PORT"]
        assert f"http://127.0.0.1:{port}/health" in " ".join(service["healthcheck"]["test"])
        assert service["depends_on"]["kafka"]["condition"] == "service_healthy"


# --- Kafka --------------------------------------------------------------------------------


def _listeners(text: str) -> dict[str, tuple[str, int]]:
    out = {}
    for entry in text.split(","):
        name, _, address = entry.strip().partition("://")
        host, _, port = address.rpartition(":")
        out[name] = (host, int(port))
    return out


def test_kafka_has_an_internal_and_a_published_external_listener(services):
    kafka = services["kafka"]
    env = env_of(kafka)
    assert kafka["image"].startswith("apache/kafka:")
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    listeners = _listeners(env["KAFKA_LISTENERS"])
    advertised = _listeners(env["KAFKA_ADVERTISED_LISTENERS"])
    assert set(listeners) == {"INTERNAL", "EXTERNAL", "CONTROLLER"}
    assert set(advertised) == {"INTERNAL", "EXTERNAL"}
    assert advertised["INTERNAL"] == ("kafka", listeners["INTERNAL"][1])
    assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] == "INTERNAL"
    protocols = dict(p.split(":") for p in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert set(protocols) == set(listeners)
    [(address, host_port, container_port)] = published(kafka)
    assert container_port == listeners["EXTERNAL"][1]
    assert advertised["EXTERNAL"] == ("localhost", host_port)  # what a host client is told
    assert mounts(kafka)[env["KAFKA_LOG_DIRS"]] == "kafka-data"
    for name in (*WORKERS, "worker-gpu", "producer"):
        host, port = env_of(services[name])["KAFKA_BOOTSTRAP_SERVERS"].split(":")
        assert (host, int(port)) == advertised["INTERNAL"], name


# --- workers --------------------------------------------------------------------------------


def test_worker_environment_is_what_the_worker_accepts(services):
    for name in (*WORKERS, "worker-gpu"):
        env = env_of(services[name])
        KafkaSettings.from_env(env)
        worker = WorkerSettings.from_env(env)  # an unknown MW_ variable raises ConfigError
        assert env["MW_WEB_HOST"] == "0.0.0.0"  # the page and /metrics reach beyond the container
        assert worker.store.startswith("rocksdb://")
        assert worker.model_root is not None


def test_workers_share_the_registry_and_keep_their_own_state(services):
    state_volumes = set()
    for name in (*WORKERS, "worker-gpu"):
        service = services[name]
        env, mounted = env_of(service), mounts(service)
        assert mounted[env["MW_MODEL_ROOT"]] == "models"  # one registry: hot reload for all
        state = mounted[env["MW_DATA_DIR"]]
        assert state not in state_volumes, f"{name} shares its RocksDB state volume"
        state_volumes.add(state)
    envs = [env_of(services[n]) for n in (*WORKERS, "worker-gpu")]
    assert len({e["MW_APP_ID"] for e in envs}) == 1  # one consumer group
    assert len({e["MW_PARTITIONS"] for e in envs}) == 1


def test_published_ports(services):
    used = []
    for name, service in services.items():
        for address, host_port, _ in published(service):
            assert address == "127.0.0.1", f"{name}: loopback unless MW_PUBLISH_ADDRESS says"
            used.append(host_port)
    assert len(used) == len(set(used)), f"a host port is published twice: {sorted(used)}"
    for name in (*WORKERS, "worker-gpu"):
        [(_, _, container_port)] = published(services[name])
        assert container_port == int(env_of(services[name])["MW_WEB_PORT"])
    assert [p[2] for p in published(services["prometheus"])] == [9090]
    assert [p[2] for p in published(services["grafana"])] == [3000]


def test_named_volumes_are_declared_and_used(compose, services):
    declared = set(compose["volumes"])
    used = set()
    for name, service in services.items():
        for source in mounts(service).values():
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name} mounts {source}, which does not exist"
            else:
                assert source in declared, f"{name} mounts undeclared volume {source}"
                used.add(source)
    assert used == declared
    assert {"kafka-data", "models", "prometheus-data", "grafana-data"} <= declared


def test_gpu_variant_reserves_a_gpu(services):
    gpu = services["worker-gpu"]
    [device] = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert gpu["image"] != services["worker-1"]["image"]


def test_producer_commands_exist(services):
    script = services["producer"]["command"][0]
    for command in script.split("&&"):
        argv = command.split()
        assert argv[0] == "meterwatch"
        parse_args(argv[1:])  # click.UsageError on an unknown command or option


# --- the image ------------------------------------------------------------------------------


def _stages(dockerfile: str) -> dict[str, list[str]]:
    stages, current = {}, None
    for line in dockerfile.splitlines():
        if m := re.match(r"FROM\s+(\S+)\s+AS\s+(\w+)", line, re.IGNORECASE):
            current = m.group(2)
            stages[current] = [m.group(1)]
        elif current and line.strip() and not line.lstrip().startswith("#"):
            stages[current].append(line)
    return stages


def test_dockerfile_stages():
    text = (ROOT / "Dockerfile").read_text()
    stages = _stages(text)
    assert list(stages) == ["wheel", "gpu", "cpu"]  # the last is what a plain build gives
    cuda = re.search(r"ARG CUDA_IMAGE=(\S+)", text).group(1)
    assert cuda.startswith("nvidia/cuda:") and "runtime" in cuda
    for stage, extras in (("gpu", "gpu,rocksdb"), ("cpu", "cpu,rocksdb")):
        body = "\n".join(stages[stage])
        assert f"install.sh {extras}" in body
        assert "train" not in body  # no torch in the worker's image
        users = [line.split()[1] for line in stages[stage] if line.startswith("USER ")]
        assert users == ["meterwatch"], f"{stage} runs as {users}"
        assert 'ENTRYPOINT ["meterwatch"]' in body
    install = (DEPLOY / "image" / "install.sh").read_text()
    assert "useradd" in install and "--uid 10001" in install
    assert "default_bundle()" in install  # the registry volume starts from the packaged bundle


def _ignored(path: str, patterns: list[str]) -> bool:
    """.dockerignore's last matching pattern wins; `!` re-includes."""
    import fnmatch

    verdict = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").removeprefix("**/")
        parts = path.split("/")
        prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        if any(fnmatch.fnmatch(p, pattern) or fnmatch.fnmatch(parts[i], pattern)
               for i, p in enumerate(prefixes)):
            verdict = not negate
    return verdict


def test_dockerignore_keeps_the_context_small_and_the_sources_in():
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    for heavy in (".venv", ".git", "data", ".venv/lib/python3.11/site-packages/torch/x.so",
                  "tests/data/x.csv", "stream_app/__pycache__/cli.cpython-311.pyc"):
        assert _ignored(heavy, patterns), heavy
    copied = re.findall(r"^COPY (?!--from)(.+) \S+$", (ROOT / "Dockerfile").read_text(), re.M)
    for sources in copied:
        for source in sources.split():
            assert (ROOT / source).exists(), source
            assert not _ignored(source, patterns), f"{source} is copied but .dockerignore drops it"
    assert not _ignored("onnx_models/default/manifest.json", patterns)
    assert _ignored("onnx_models/mine/manifest.json", patterns)


# --- Prometheus and Grafana -----------------------------------------------------------------


@pytest.fixture(scope="module")
def exported() -> set[str]:
    """Every sample name the worker's /metrics can hold, plus Prometheus' own `up`."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"),
                "summary": ("_sum", "_count", ""), "info": ("_info",), "gauge": ("",),
                "unknown": ("",), "stateset": ("",), "gaugehistogram": ("_bucket", "_gsum")}
    names = {"up"}
    for family in WorkerMetrics().registry.collect():
        names.update(family.name + s for s in suffixes[family.type])
        names.update(sample.name for sample in family.samples)
    return names


PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and",
                "or", "unless", "offset", "le", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers that are no function, keyword, label or
    Grafana variable."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    expr = re.sub(r"\$\w+", "", expr)  # Grafana variables
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    expr = re.sub(r"(?<![\w:])\d+(?:\.\d*)?(?:[eE][+-]?\d+)?", "", expr)  # numbers: 1e-9
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", expr):
        following = expr[m.end():].lstrip()[:1]
        if following != "(" and m.group().lower() not in PROMQL_WORDS:
            names.add(m.group())
    return names


def test_metric_names_are_read_from_promql():
    assert metric_names('histogram_quantile(0.99, sum by (le) (rate(a_bucket{x="y"}[5m])))') \
        == {"a_bucket"}
    assert metric_names("sum(rate(b_total[$__rate_interval])) / clamp_min(sum(c), 1e-9) > 0.01 "
                        "and on (topic) d") == {"b_total", "c", "d"}


@pytest.fixture(scope="module")
def prometheus() -> dict:
    return yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())


def test_prometheus_scrapes_every_worker(prometheus, services):
    jobs = {job["job_name"]: job for job in prometheus["scrape_configs"]}
    static = {t for c in jobs["meterwatch"]["static_configs"] for t in c["targets"]}
    assert static == {f"{n}:{env_of(services[n])['MW_WEB_PORT']}" for n in WORKERS}
    [gpu] = jobs["meterwatch-gpu"]["dns_sd_configs"]  # absent without the profile: not "down"
    assert gpu["names"] == ["worker-gpu"]
    assert gpu["port"] == int(env_of(services["worker-gpu"])["MW_WEB_PORT"])
    assert all(j.get("metrics_path", "/metrics") == "/metrics" for j in jobs.values())


def test_prometheus_mounts_its_config_and_rules(prometheus, services):
    mounted = mounts(services["prometheus"])
    assert mounted["/etc/prometheus/prometheus.yml"] == "./deploy/prometheus/prometheus.yml"
    [rule_glob] = prometheus["rule_files"]
    folder, _, pattern = rule_glob.rpartition("/")
    source = ROOT / mounted[folder]
    assert sorted(source.glob(pattern)), f"no rule files match {rule_glob}"


@pytest.fixture(scope="module")
def rules() -> list[dict]:
    groups = []
    for path in sorted((DEPLOY / "prometheus" / "rules").glob("*.yml")):
        groups += yaml.safe_load(path.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_alert_rules(rules, exported):
    by_name = {rule["alert"]: rule for rule in rules}
    assert {"MeterwatchWorkerDown", "MeterwatchLagGrowing", "MeterwatchDeadLetterRate",
            "MeterwatchNoReadings", "MeterwatchScoringLate"} <= set(by_name)
    for name, rule in by_name.items():
        assert re.fullmatch(r"\d+[smh]", rule["for"]), name
        assert rule["labels"]["severity"] in ("critical", "warning", "info"), name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
        unknown = metric_names(rule["expr"]) - exported
        assert not unknown, f"{name} queries {unknown}, which the worker does not export"
    assert "up" in metric_names(by_name["MeterwatchWorkerDown"]["expr"])


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads((DEPLOY / "grafana" / "dashboards" / "meterwatch.json").read_text())


def _queries(dashboard: dict) -> list[tuple[str, str]]:
    """(panel title, PromQL) of every panel target and templating query."""
    out = [(p["title"], t["expr"]) for p in dashboard["panels"] for t in p["targets"]]
    for variable in dashboard["templating"]["list"]:
        query = variable["query"]
        query = query["query"] if isinstance(query, dict) else query
        out.append((f"variable {variable['name']}", re.sub(r"^label_values\((.*),\s*\w+\)$",
                                                           r"\1", query)))
    return out


def test_dashboard_queries_name_exported_metrics(dashboard, exported):
    for title, expr in _queries(dashboard):
        names = metric_names(expr)
        assert names, f"{title}: no metric in {expr!r}"
        unknown = names - exported
        assert not unknown, f"panel {title!r} queries {unknown}, which the worker does not export"


def test_dashboard_shows_what_an_operator_watches(dashboard):
    exprs = [expr for _, expr in _queries(dashboard)]

    def shown(metric: str, by: str | None = None) -> bool:
        return any(metric in metric_names(e) and (by is None or re.search(rf"by \([^)]*\b{by}\b", e))
                   for e in exprs)

    assert shown("meterwatch_readings_in_total")  # readings/s
    assert shown("meterwatch_consumer_lag", by="partition")
    assert shown("meterwatch_score_seconds_bucket")  # scoring latency
    assert shown("meterwatch_alerts_out_total", by="severity")
    assert shown("meterwatch_alerts_out_total", by="category")
    assert shown("meterwatch_readings_invalid_total", by="reason")  # dead letters
    assert shown("meterwatch_bundle_info", by="version")
    assert shown("meterwatch_reading_to_scored_seconds_bucket")  # every reading
    assert shown("meterwatch_reading_to_alert_seconds_bucket")  # readings that raised an alert
    assert shown("process_resident_memory_bytes", by="instance")  # the process collector
    assert shown("process_cpu_seconds_total", by="instance")
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_grafana_provisioning_wires_datasource_and_dashboards(dashboard, services):
    grafana = mounts(services["grafana"])
    provisioning = ROOT / grafana["/etc/grafana/provisioning"]
    [source] = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())[
        "datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    uids = {p["datasource"]["uid"] for p in dashboard["panels"]}
    uids |= {t["datasource"]["uid"] for p in dashboard["panels"] for t in p["targets"]}
    assert uids == {source["uid"]}
    [provider] = yaml.safe_load((provisioning / "dashboards" / "meterwatch.yml").read_text())[
        "providers"]
    folder = provider["options"]["path"]
    assert (ROOT / grafana[folder] / "meterwatch.json").is_file()
    home = env_of(services["grafana"])["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{folder}/meterwatch.json"


# --- the Compose Specification and the compose client ---------------------------------------


def test_compose_file_follows_the_compose_specification():
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((ROOT / "tests" / "data" / "compose-spec.json").read_text())
    document = yaml.safe_load((ROOT / "docker-compose.yml").read_text())  # as written
    validator = jsonschema.Draft202012Validator(schema)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
              for e in validator.iter_errors(document)]
    assert not errors, "\n".join(errors)
    misspelt = {**document, "services": {**document["services"], "kafka": {
        **document["services"]["kafka"], "healtcheck": {"test": ["CMD", "true"]}}}}
    assert not validator.is_valid(misspelt)  # the schema does catch an unknown key



def test_docker_compose_config_accepts_the_file():
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "compose", "version"], capture_output=True,
                                        timeout=30).returncode != 0:
        pytest.skip("no `docker compose` plugin here: the YAML checks above stand in for it")
    for profiles in ([], ["--profile", "gpu", "--profile", "demo"]):
        done = subprocess.run([docker, "compose", *profiles, "config", "--quiet"], cwd=ROOT,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
