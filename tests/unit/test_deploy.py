"""The deploy/ files, checked offline (no Docker engine, no cluster, no network).

- every YAML file under deploy/ parses (duplicate keys are an error);
- the Kubernetes manifests validate against the Kubernetes JSON schemas of a fixed version
  (kubernetes-validate ships them in the wheel; strict mode rejects unknown fields), and the
  Deployment, Service, PDB, HPA, ConfigMap and Secret say what a deployment needs;
- the compose files validate against the Compose spec schema vendored by check-jsonschema, their
  bot settings are real settings listed in .env.example, their build targets exist; the
  Sentinel variant runs every Redis from a writable copy of its deploy/redis/ template, its
  Sentinels monitor the primary service and the bot asks them for it, with durable acks;
- the ConfigMap's commented examples (cluster, Sentinel) are real settings with valid values;
- the Dockerfile (parsed by the `dockerfile` package, BuildKit's own parser) is multi-stage,
  slim, non-root, has health checks and bakes no secret in;
- the images install only from requirements/*.lock (exact versions with sha256 hashes, made by
  `make lock`), the locks pin every requirement of pyproject.toml within its specifier, and the
  floors in pyproject.toml exclude versions with published advisories;
- the Slack manifests grant every scope the Slack Web API calls in bot/ need.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

import dockerfile
import jsonschema
import kubernetes_validate
import pytest
import yaml
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from bot.config import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
SLACK = DEPLOY / "slack"
COMPOSE = DEPLOY / "docker-compose.yml"
DOCKERFILE = DEPLOY / "Dockerfile"

# The Kubernetes version the manifests are validated against (schemas ship offline in
# kubernetes-validate). Raise it deliberately, together with the pin in pyproject.toml.
K8S_VERSION = "1.31.0"

SETTINGS = {name.upper() for name in Settings.model_fields}
SECRET_SETTINGS = {"SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "SLACK_APP_TOKEN"}


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys (PyYAML keeps the last one silently)."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False):
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping
)


def load_all(path: Path) -> list[Any]:
    return [doc for doc in yaml.load_all(path.read_text(), Loader=_UniqueKeyLoader) if doc]


def load_one(path: Path) -> Any:
    docs = load_all(path)
    assert len(docs) == 1, f"{path.name}: expected one YAML document, got {len(docs)}"
    return docs[0]


YAML_FILES = sorted(p for p in DEPLOY.rglob("*") if p.suffix in {".yaml", ".yml"})
K8S_MANIFESTS = sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def k8s(kind: str) -> dict[str, Any]:
    found = [d for p in K8S_MANIFESTS for d in load_all(p) if d.get("kind") == kind]
    assert len(found) == 1, f"expected one {kind} in deploy/kubernetes, found {len(found)}"
    return found[0]


def bot_container() -> dict[str, Any]:
    containers = k8s("Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def container_port(name_or_number: str | int) -> int:
    for port in bot_container()["ports"]:
        if name_or_number in (port.get("name"), port["containerPort"]):
            return port["containerPort"]
    raise AssertionError(f"the bot container has no port {name_or_number!r}")


def configmap_value(name: str) -> str | None:
    return k8s("ConfigMap")["data"].get(name)


def default(name: str) -> Any:
    return Settings.model_fields[name.lower()].default


# ---- YAML ----------------------------------------------------------------------------------


def test_deploy_has_the_expected_files():
    for rel in ["Dockerfile", "docker-compose.yml", "docker-compose.sentinel.yml", "README.md",
                "redis/primary.conf", "redis/replica.conf", "redis/sentinel.conf",
                "slack/required_scopes.txt", "slack/manifest.http.yaml",
                "slack/manifest.socket-mode.yaml"]:
        assert (DEPLOY / rel).is_file(), rel
    names = {p.name for p in K8S.glob("*.yaml")}
    assert {"configmap.yaml", "secret.yaml", "deployment.yaml", "service.yaml", "ingress.yaml",
            "pdb.yaml", "hpa.yaml", "kustomization.yaml"} <= names
    assert (ROOT / ".dockerignore").is_file()


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_yaml_file_parses(path: Path):
    assert load_all(path), f"{path} is empty"


def test_duplicate_keys_are_caught():
    with pytest.raises(yaml.constructor.ConstructorError, match="duplicate key"):
        yaml.load("a: 1\na: 2\n", Loader=_UniqueKeyLoader)


# ---- Kubernetes ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", K8S_MANIFESTS, ids=lambda p: p.name)
def test_kubernetes_manifest_validates_against_the_schema(path: Path):
    for doc in load_all(path):
        version = kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        assert version == "1.31"


def test_the_validator_really_rejects_bad_manifests():
    deployment = json.loads(json.dumps(k8s("Deployment")))
    deployment["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)
    typo = json.loads(json.dumps(k8s("Service")))
    typo["spec"]["prots"] = typo["spec"].pop("ports")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(typo, K8S_VERSION, strict=True)


def test_manifests_name_no_namespace():
    for path in K8S_MANIFESTS:
        for doc in load_all(path):
            assert "namespace" not in doc["metadata"], f"{path.name} hard-codes a namespace"


def test_kustomization_lists_every_manifest_but_the_secret_template():
    kustomization = load_one(K8S / "kustomization.yaml")
    listed = kustomization["resources"]
    for name in listed:
        assert (K8S / name).is_file(), name
    expected = {p.name for p in K8S_MANIFESTS} - {"secret.yaml"}
    assert set(listed) == expected
    # applying placeholders over the real Slack tokens would break a running deployment
    assert "secret.yaml" not in listed


def test_deployment():
    deployment = k8s("Deployment")
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    container = bot_container()
    assert spec["replicas"] >= 2
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0

    # probes: liveness and startup on /healthz on the Slack port, readiness on /readyz on the
    # metrics port (METRICS_PORT: /readyz and /metrics are not served on PORT)
    port = container_port("http")
    assert port == int(configmap_value("PORT") or default("PORT"))
    metrics_port = container_port("metrics")
    assert metrics_port == int(configmap_value("METRICS_PORT"))
    for probe, path, served_on in [("livenessProbe", "/healthz", port),
                                   ("readinessProbe", "/readyz", metrics_port),
                                   ("startupProbe", "/healthz", port)]:
        get = container[probe]["httpGet"]
        assert get["path"] == path, probe
        assert container_port(get["port"]) == served_on, probe
    # the kubelet and Prometheus reach the pod's IP, not its loopback
    assert configmap_value("METRICS_HOST") == "0.0.0.0"
    annotations = spec["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    assert int(annotations["prometheus.io/port"]) == metrics_port
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] > default(
        "ADK_STARTUP_WAIT_SECONDS"
    ), "the startup probe must outlast the bot's wait for ADK"

    resources_ = container["resources"]
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= resources_[kind].keys(), kind

    # non-root, read-only, no privilege escalation, no capabilities
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert any(m["mountPath"] == "/tmp" for m in container["volumeMounts"])

    # settings from the ConfigMap and the Secret
    refs = {(k, v["name"]) for e in container["envFrom"] for k, v in e.items()}
    assert refs == {("configMapRef", k8s("ConfigMap")["metadata"]["name"]),
                    ("secretRef", k8s("Secret")["metadata"]["name"])}
    assert container.get("args", ["serve"]) == ["serve"]

    # graceful shutdown: preStop sleep, then SIGTERM; turns get SHUTDOWN_GRACE_SECONDS after
    # the HTTP server's own 5 s, all before the kubelet's SIGKILL
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    grace = float(configmap_value("SHUTDOWN_GRACE_SECONDS") or default("SHUTDOWN_GRACE_SECONDS"))
    assert pod["terminationGracePeriodSeconds"] > float(pre_stop[1]) + 5 + grace

    # replicas spread over nodes
    assert pod.get("topologySpreadConstraints") or pod.get("affinity", {}).get("podAntiAffinity")


def test_service_targets_the_container_port():
    service = k8s("Service")
    deployment = k8s("Deployment")
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["selector"].items() <= (
        deployment["spec"]["template"]["metadata"]["labels"].items()
    )
    (port,) = service["spec"]["ports"]
    assert port["port"] == 80
    assert container_port(port["targetPort"]) == 3000
    # the metrics port stays off the Service (and so off the Ingress)
    assert container_port("metrics") != container_port(port["targetPort"])


def test_ingress_routes_slack_events_to_the_service():
    ingress = k8s("Ingress")
    service = k8s("Service")
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"].endswith("example.com"), "the host must be an obvious placeholder"
    (path,) = rule["http"]["paths"]
    assert path["path"] == "/slack/events"
    backend = path["backend"]["service"]
    assert backend["name"] == service["metadata"]["name"]
    assert backend["port"].get("name") == service["spec"]["ports"][0]["name"]


def test_pdb_and_hpa():
    deployment = k8s("Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    pdb = k8s("PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    hpa = k8s("HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1", "kind": "Deployment", "name": deployment["metadata"]["name"]
    }
    assert hpa["spec"]["minReplicas"] >= 2
    assert hpa["spec"]["maxReplicas"] >= hpa["spec"]["minReplicas"]
    assert any(m["type"] == "Resource" and m["resource"]["name"] == "cpu"
               for m in hpa["spec"]["metrics"])


def test_configmap_and_secret_keys_are_real_settings():
    config = k8s("ConfigMap")["data"]
    secret = k8s("Secret")["stringData"]
    assert set(config) <= SETTINGS, set(config) - SETTINGS
    assert set(secret) <= SETTINGS, set(secret) - SETTINGS
    assert SECRET_SETTINGS <= set(secret)
    assert not set(config) & SECRET_SETTINGS, "secrets belong in the Secret"
    # Redis and ADK are external in Kubernetes: placeholders the reader must replace
    assert "example" in config["REDIS_URL"]
    assert "example" in config["ADK_BASE_URL"]
    # the ConfigMap's values are valid settings
    Settings(_env_file=None, **{k.lower(): v for k, v in config.items()})


def test_secret_holds_only_placeholders():
    for key, value in k8s("Secret")["stringData"].items():
        assert value == "" or "REPLACE" in value, key
        assert not re.search(r"xox[abpe]-\d|xapp-\d", value), key


# ---- docker compose ------------------------------------------------------------------------


def compose() -> dict[str, Any]:
    return load_one(COMPOSE)


def compose_env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def env_example_names() -> set[str]:
    names = set()
    for line in (ROOT / ".env.example").read_text().splitlines():
        match = re.match(r"^\s*#?\s*([A-Z][A-Z0-9_]*)=", line)
        if match:
            names.add(match.group(1))
    return names


def test_compose_validates_against_the_compose_spec():
    schema_text = (
        resources.files("check_jsonschema.builtin_schemas.vendor")
        .joinpath("compose-spec.json")
        .read_text()
    )
    schema = json.loads(schema_text)
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(compose())]
    assert not errors, errors
    bad = compose()
    bad["services"]["bot"]["depends_on"]["redis"]["condition"] = "service_up"
    assert list(validator.iter_errors(bad)), "the schema check must reject a bad condition"


def test_compose_services():
    services = compose()["services"]
    assert set(services) == {"redis", "adk", "bot"}
    redis = services["redis"]
    assert redis["image"].startswith("redis:7")
    assert "--appendonly" in redis["command"]
    assert "yes" in redis["command"]
    assert any(v.endswith(":/data") for v in redis["volumes"])
    for name, service in services.items():
        assert service["healthcheck"]["test"], name
        assert service["restart"] == "unless-stopped", name
    assert "redis-cli" in services["redis"]["healthcheck"]["test"]
    assert any("/list-apps" in part for part in services["adk"]["healthcheck"]["test"])
    assert "ports" not in services["adk"], "the ADK API has no auth: do not publish it"

    bot = services["bot"]
    assert bot["depends_on"] == {"redis": {"condition": "service_healthy"},
                                 "adk": {"condition": "service_healthy"}}
    assert bot["env_file"] in ("../.env", ["../.env"])


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's `${VAR:-default}` and `${VAR}` interpolation."""
    def value(match: re.Match[str]) -> str:
        name, fallback = match.group(1), match.group(3)
        return env.get(name) or (fallback if fallback is not None else "")
    return re.sub(r"\$\{(\w+)(:-([^}]*))?\}", value, text)


def test_compose_publishes_the_bot_on_loopback_unless_told_otherwise():
    (published,) = compose()["services"]["bot"]["ports"]
    assert interpolate(published, {}) == "127.0.0.1:3000:3000"
    assert interpolate(published, {"BOT_PUBLISH_ADDR": "0.0.0.0"}) == "0.0.0.0:3000:3000"
    for service in compose()["services"].values():
        for port in service.get("ports", []):
            assert interpolate(str(port), {}).startswith("127.0.0.1:"), port


def test_compose_bot_settings_are_real_and_documented():
    env = compose_env(compose()["services"]["bot"])
    assert set(env) <= SETTINGS, set(env) - SETTINGS
    assert set(env) <= env_example_names(), set(env) - env_example_names()
    assert env["REDIS_URL"] == "redis://redis:6379/0"
    assert env["ADK_BASE_URL"] == "http://adk:8000"
    assert env["HOST"] == "0.0.0.0"
    assert env["PORT"] == "3000"
    assert not set(env) & SECRET_SETTINGS, "tokens come from ../.env, not the compose file"
    Settings(_env_file=None, **{k.lower(): v for k, v in env.items()})


def test_compose_stop_grace_period_covers_the_shutdown_grace():
    bot = compose()["services"]["bot"]
    match = re.fullmatch(r"(\d+)s", bot["stop_grace_period"])
    assert match, bot["stop_grace_period"]
    grace = float(compose_env(bot).get("SHUTDOWN_GRACE_SECONDS",
                                       default("SHUTDOWN_GRACE_SECONDS")))
    assert int(match.group(1)) > grace + 5


def test_compose_builds_existing_dockerfile_targets():
    stages = dockerfile_stages()
    for name in ("adk", "bot"):
        build = compose()["services"][name]["build"]
        assert (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
        assert build["target"] in stages, build["target"]
    assert compose()["services"]["adk"]["build"]["target"] == "adk-demo"
    assert compose()["services"]["bot"]["build"]["target"] == list(stages)[-1]


# ---- docker compose with Redis Sentinel ----------------------------------------------------

SENTINEL_COMPOSE = DEPLOY / "docker-compose.sentinel.yml"
REDIS_CONF = DEPLOY / "redis"


def sentinel_compose() -> dict[str, Any]:
    return load_one(SENTINEL_COMPOSE)


def redis_conf(name: str) -> list[list[str]]:
    """The directives of a redis.conf or sentinel.conf under deploy/redis, as words."""
    lines = (REDIS_CONF / name).read_text().splitlines()
    return [line.split() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def directive(conf: list[list[str]], *words: str) -> list[list[str]]:
    """The lines of `conf` that start with `words`."""
    return [line for line in conf if line[:len(words)] == list(words)]


def template_copy(service: dict[str, Any]) -> tuple[str, str, str]:
    """(the deploy/ file mounted as the service's template, where it is mounted, the shell
    command that copies it onto the volume and runs from the copy)."""
    command = service["command"]
    assert command[:2] == ["sh", "-c"], command
    (mount,) = [v for v in service["volumes"] if v.startswith("./redis/")]
    source, target, mode = mount.split(":")
    assert mode == "ro"
    return source, target, command[2]


def sentinel_services() -> dict[str, dict[str, Any]]:
    return {name: s for name, s in sentinel_compose()["services"].items()
            if name.startswith("sentinel-")}


def test_sentinel_compose_validates_against_the_compose_spec():
    schema_text = (
        resources.files("check_jsonschema.builtin_schemas.vendor")
        .joinpath("compose-spec.json")
        .read_text()
    )
    schema = json.loads(schema_text)
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = [f"{list(e.absolute_path)}: {e.message}"
              for e in validator.iter_errors(sentinel_compose())]
    assert not errors, errors


def test_sentinel_compose_services():
    services = sentinel_compose()["services"]
    assert set(services) == {"redis-primary", "redis-replica", "sentinel-1", "sentinel-2",
                             "sentinel-3", "adk", "bot"}
    for name, service in services.items():
        assert service["healthcheck"]["test"], name
        assert service["restart"] == "unless-stopped", name
        if name.startswith(("redis-", "sentinel-")):
            assert service["image"].startswith("redis:7"), name
            assert service["user"] == "redis", name
            assert "ports" not in service, f"{name}: the Redis nodes stay on the compose network"
    declared = set(sentinel_compose()["volumes"])
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert source.startswith("./") or source in declared, (name, volume)
    # the adk service is the one of docker-compose.yml
    assert services["adk"] == compose()["services"]["adk"]


def test_sentinel_compose_runs_every_redis_from_a_writable_copy_of_its_template():
    """Sentinel rewrites its configuration file, and a failover rewrites a data node's (its
    role): each container copies its template onto its own volume once and runs from there."""
    expected = {"redis-primary": "primary.conf", "redis-replica": "replica.conf",
                "sentinel-1": "sentinel.conf", "sentinel-2": "sentinel.conf",
                "sentinel-3": "sentinel.conf"}
    volumes_seen: set[str] = set()
    for name, template in expected.items():
        service = sentinel_compose()["services"][name]
        source, target, shell = template_copy(service)
        assert (SENTINEL_COMPOSE.parent / source).resolve() == REDIS_CONF / template, name
        (data,) = [v for v in service["volumes"] if v.endswith(":/data")]
        assert data.split(":")[0] in sentinel_compose()["volumes"], name
        assert data not in volumes_seen, f"{name} shares a volume"
        volumes_seen.add(data)
        copy = "/data/sentinel.conf" if template == "sentinel.conf" else "/data/redis.conf"
        assert shell.startswith(f"test -f {copy} || "), name  # copied at the first start only
        assert f"cp {target} {copy}" in shell, name
        assert shell.split("; exec ", 1)[1].split()[:2] == ["redis-server", copy], name
        assert ("--sentinel" in shell) == (template == "sentinel.conf"), name
        if template == "sentinel.conf":
            assert f"echo 'sentinel announce-ip {name}' >> {copy}" in shell


def test_sentinel_compose_data_nodes_keep_aof_and_replicate_from_the_primary():
    services = sentinel_compose()["services"]
    for template in ("primary.conf", "replica.conf"):
        conf = redis_conf(template)
        assert directive(conf, "appendonly") == [["appendonly", "yes"]], template
        assert directive(conf, "appendfsync") == [["appendfsync", "everysec"]], template
        assert directive(conf, "maxmemory-policy") == [["maxmemory-policy", "noeviction"]]
        assert directive(conf, "dir") == [["dir", "/data"]], template
    assert directive(redis_conf("primary.conf"), "replicaof") == []
    assert directive(redis_conf("primary.conf"), "replica-announce-ip") == [
        ["replica-announce-ip", "redis-primary"]]
    assert directive(redis_conf("replica.conf"), "replica-announce-ip") == [
        ["replica-announce-ip", "redis-replica"]]
    (replicaof,) = directive(redis_conf("replica.conf"), "replicaof")
    assert replicaof[1] == "redis-primary" and replicaof[1] in services
    port = directive(redis_conf("primary.conf"), "port")[0][1]
    assert replicaof[2] == port
    assert services["redis-replica"]["depends_on"] == {
        "redis-primary": {"condition": "service_healthy"}}


def test_sentinel_config_monitors_the_primary_service():
    conf = redis_conf("sentinel.conf")
    services = sentinel_compose()["services"]
    (monitor,) = directive(conf, "sentinel", "monitor")
    _, _, master, host, port, quorum = monitor
    assert host == "redis-primary" and host in services
    assert port == directive(redis_conf("primary.conf"), "port")[0][1]
    sentinels = sentinel_services()
    assert len(sentinels) == 3
    assert len(sentinels) // 2 < int(quorum) <= len(sentinels)
    # hostnames resolved, and resolution switched on before the monitor line that needs it
    resolve = conf.index(["sentinel", "resolve-hostnames", "yes"])
    assert resolve < conf.index(monitor)
    assert ["sentinel", "announce-hostnames", "yes"] in conf
    assert directive(conf, "port") == [["port", "26379"]]
    for name, service in sentinels.items():
        assert service["depends_on"] == {"redis-primary": {"condition": "service_healthy"}}
        assert "26379" in service["healthcheck"]["test"], name
    # the bot asks these Sentinels for that primary
    env = compose_env(services["bot"])
    assert env["REDIS_SENTINEL_MASTER"] == master
    listed = [item.rsplit(":", 1) for item in env["REDIS_SENTINELS"].split(",")]
    assert {host for host, _ in listed} == set(sentinels)
    assert {port for _, port in listed} == {"26379"}


def test_sentinel_compose_bot_settings_are_real_and_ask_for_durable_acks():
    services = sentinel_compose()["services"]
    bot = services["bot"]
    env = compose_env(bot)
    assert set(env) <= SETTINGS, set(env) - SETTINGS
    assert set(env) <= env_example_names(), set(env) - env_example_names()
    assert not set(env) & SECRET_SETTINGS, "tokens come from ../.env, not the compose file"
    settings = Settings(_env_file=None, **{k.lower(): v for k, v in env.items()})
    assert settings.redis_mode == "sentinel"
    assert settings.redis_problems() == []
    assert settings.redis_min_replicas == 1
    assert "REDIS_URL" not in env  # the Sentinels name the primary
    replicas = [t for t in ("primary.conf", "replica.conf") if directive(redis_conf(t),
                                                                           "replicaof")]
    assert settings.redis_min_replicas <= len(replicas)
    assert set(bot["depends_on"]) == set(services) - {"bot"}
    assert all(d == {"condition": "service_healthy"} for d in bot["depends_on"].values())
    (published,) = bot["ports"]
    assert interpolate(published, {}) == "127.0.0.1:3000:3000"


def test_sentinel_compose_bot_is_the_bot_of_docker_compose_yml():
    """Only where Redis is differs: the rest of the bot's service is the one of
    docker-compose.yml (image, build, ports, health check, shutdown, hardening)."""
    plain = dict(compose()["services"]["bot"])
    sentinel = dict(sentinel_compose()["services"]["bot"])
    plain_env, sentinel_env = compose_env(plain), compose_env(sentinel)
    for service in (plain, sentinel):
        del service["environment"], service["depends_on"]
    assert sentinel == plain
    assert {k: v for k, v in plain_env.items() if k != "REDIS_URL"} == {
        k: v for k, v in sentinel_env.items() if not k.startswith("REDIS_")}


# ---- the Kubernetes ConfigMap's commented examples -----------------------------------------

COMMENTED_SETTING = re.compile(r"^\s*#\s*([A-Z][A-Z0-9_]*):\s*(\"[^\"]*\"|\S+)\s*$")


def commented_examples() -> list[tuple[str, str]]:
    """`# NAME: "value"` lines of configmap.yaml: the settings shown for other Redis setups."""
    found = []
    for line in (K8S / "configmap.yaml").read_text().splitlines():
        match = COMMENTED_SETTING.match(line)
        if match:
            found.append((match.group(1), match.group(2).strip('"')))
    return found


def test_configmap_examples_name_real_settings_with_valid_values():
    examples = commented_examples()
    names = {name for name, _ in examples}
    assert {"REDIS_MODE", "REDIS_URL", "REDIS_SHARDS", "REDIS_SENTINELS",
            "REDIS_SENTINEL_MASTER", "REDIS_MIN_REPLICAS"} <= names
    assert names <= SETTINGS, names - SETTINGS
    assert not names & SECRET_SETTINGS
    for name, value in examples:
        Settings(_env_file=None, **{name.lower(): value})
    modes = {value for name, value in examples if name == "REDIS_MODE"}
    assert modes == {"cluster", "sentinel"}


# ---- Dockerfile ----------------------------------------------------------------------------


def dockerfile_commands() -> tuple[dockerfile.Command, ...]:
    return dockerfile.parse_file(str(DOCKERFILE))


def dockerfile_stages() -> dict[str, list[dockerfile.Command]]:
    """Stage name -> its commands, in file order (the last stage is the default target)."""
    stages: dict[str, list[dockerfile.Command]] = {}
    current: list[dockerfile.Command] | None = None
    for command in dockerfile_commands():
        if command.cmd == "FROM":
            value = command.value
            assert len(value) == 3 and value[1].upper() == "AS", f"unnamed stage: {command}"
            current = stages.setdefault(value[2], [command])
        elif current is not None:
            current.append(command)
    return stages


def last(stage: list[dockerfile.Command], cmd: str) -> dockerfile.Command | None:
    found = [c for c in stage if c.cmd == cmd]
    return found[-1] if found else None


def test_dockerfile_base_image_is_slim_python_311():
    commands = dockerfile_commands()
    args = {c.value[0].split("=", 1)[0]: c.value[0].split("=", 1)[1]
            for c in commands if c.cmd == "ARG" and "=" in c.value[0]}
    stages = dockerfile_stages()
    for name, stage in stages.items():
        base = stage[0].value[0]
        if base in stages:
            continue
        base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], base)
        assert re.fullmatch(r"python:3\.11-slim(-\w+)?(@sha256:[0-9a-f]+)?", base), (name, base)
    assert len(stages) >= 3, "multi-stage: a builder and the runtime images"


def test_dockerfile_runtime_images():
    stages = dockerfile_stages()
    bot = stages[list(stages)[-1]]
    adk = stages["adk-demo"]
    for name, stage, port in [("bot", bot, "3000"), ("adk-demo", adk, "8000")]:
        user = last(stage, "USER")
        assert user is not None, name
        uid = user.value[0].split(":")[0]
        assert uid.isdigit() and int(uid) != 0, f"{name}: a numeric non-root USER"
        healthcheck = last(stage, "HEALTHCHECK")
        assert healthcheck is not None and healthcheck.value[0] == "CMD", name
        assert last(stage, "EXPOSE").value == (port,), name
        # the runtime copies only the virtualenv out of a builder (no compilers, no sources)
        copies = [c for c in stage if c.cmd == "COPY" and any(f.startswith("--from=")
                                                              for f in c.flags)]
        assert copies and all(c.value[0] == "/opt/venv" for c in copies), name
    assert "/healthz" in last(bot, "HEALTHCHECK").original
    assert "/list-apps" in last(adk, "HEALTHCHECK").original
    assert last(bot, "ENTRYPOINT").json and last(bot, "ENTRYPOINT").value == ("adk-slack-bot",)
    assert last(bot, "CMD").value == ("serve",)
    adk_cmd = last(adk, "CMD").value
    # ADK's DNS-rebinding guard rejects Host: adk:8000 on a loopback bind
    assert adk_cmd[:1] == ("api_server",)
    assert adk_cmd[adk_cmd.index("--host") + 1] == "0.0.0.0"
    assert adk_cmd[-1] == "examples/agents"
    assert (ROOT / "examples/agents/finops_cost_data_analyst/agent.py").is_file()
    env = " ".join(c.original for c in dockerfile_commands() if c.cmd == "ENV")
    assert "PYTHONUNBUFFERED=1" in env


def test_dockerfile_bakes_no_secrets():
    for command in dockerfile_commands():
        assert command.cmd != "ADD", f"use COPY, not ADD: {command.original}"
        text = command.original
        if command.cmd in ("COPY", "ENV", "ARG"):
            assert not re.search(r"\.env\b(?!\.example)", text), text
            assert not re.search(r"TOKEN|SECRET|PASSWORD|API_KEY", text, re.I), text
    ignored = (ROOT / ".dockerignore").read_text().split()
    for entry in (".env", ".venv", ".git"):
        assert entry in ignored, entry


def test_dockerfile_copies_only_files_that_exist():
    for command in dockerfile_commands():
        if command.cmd == "COPY" and not any(f.startswith("--from=") for f in command.flags):
            for source in command.value[:-1]:
                assert (ROOT / source).exists(), source


# ---- Lock files: the images install exact, hashed versions ---------------------------------

REQUIREMENTS = ROOT / "requirements"
LOCKS = {
    # lock file -> what pyproject.toml says it must hold
    "bot.lock": "the project's dependencies",
    "adk.lock": "the project's dependencies and the `adk` extra",
    "build.lock": "the build system's requires, and pip",
}
# The last release of each package with a published advisory, and the advisory. The floors in
# pyproject.toml must reject these versions.
LAST_VULNERABLE = {
    "aiohttp": ("3.14.2", "CVE-2026-69244 / GHSA-cq5v-8q36-5273, fixed in 3.14.3"),
    "starlette": ("1.3.0", "CVE-2026-54283 / GHSA-82w8-qh3p-5jfq, fixed in 1.3.1"),
    "uvicorn": ("0.12.2", "a race condition fixed in 0.12.3 (GHSA-33c7-2mpw-hg34 in 0.11.7)"),
}
LOCK_LINE = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)((?: --hash=sha256:[0-9a-f]{64})+)")
PIP_SEPARATORS = re.compile(r"&&|\|\||;|\|")


def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def lock_entries(text: str) -> list[str]:
    """The requirement entries of a pip requirements file: continuations joined, comments out."""
    joined = re.sub(r"\\\n", " ", text)
    entries = []
    for line in joined.splitlines():
        line = re.sub(r"(^|\s)#.*", "", line)
        line = " ".join(line.split())
        if line:
            entries.append(line)
    return entries


def lock_problems(text: str) -> list[str]:
    """Entries that are not `name==version` with sha256 hashes (and nothing else)."""
    return [entry for entry in lock_entries(text) if not LOCK_LINE.fullmatch(entry)]


def lock_pins(name: str) -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for entry in lock_entries((REQUIREMENTS / name).read_text()):
        match = LOCK_LINE.fullmatch(entry)
        assert match, f"{name}: {entry[:80]}"
        package = canonicalize_name(match.group(1))
        assert package not in pins, f"{name}: {package} pinned twice"
        pins[package] = Version(match.group(2))
    return pins


def lock_inputs(name: str) -> list[Requirement]:
    project = pyproject()
    if name == "build.lock":
        return [Requirement(r) for r in [*project["build-system"]["requires"], "pip"]]
    requirements = list(project["project"]["dependencies"])
    if name == "adk.lock":
        requirements += project["project"]["optional-dependencies"]["adk"]
    return [Requirement(r) for r in requirements]


def image_python() -> str:
    """major.minor of the Python in the Dockerfile's base image (ARG PYTHON_IMAGE)."""
    for command in dockerfile_commands():
        match = re.fullmatch(r"PYTHON_IMAGE=python:(\d+\.\d+)\S*", command.value[0])
        if command.cmd == "ARG" and match:
            return match.group(1)
    raise AssertionError("no ARG PYTHON_IMAGE=python:X.Y in the Dockerfile")


def lock_environment() -> dict[str, str]:
    """Marker values of the images: Linux x86_64, CPython, the base image's Python."""
    python = image_python()
    return {**default_environment(), "python_version": python, "python_full_version": python + ".0",
            "sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64",
            "os_name": "posix", "implementation_name": "cpython",
            "platform_python_implementation": "CPython"}


def pip_invocations(shell: str) -> list[list[str]]:
    """The pip commands in a RUN line, each as argv from the pip subcommand on."""
    found = []
    for part in PIP_SEPARATORS.split(shell):
        argv = shlex.split(part)
        if not argv:
            continue
        if argv[0].endswith("python") and argv[1:3] == ["-m", "pip"]:
            argv = argv[3:]
        elif Path(argv[0]).name in ("pip", "pip3"):
            argv = argv[1:]
        else:
            continue
        while argv and argv[0].startswith("-"):  # pip's global options, e.g. --python X
            argv = argv[2:] if argv[0] in ("--python", "--log", "--cache-dir") else argv[1:]
        found.append(argv)
    return found


def pip_problems(shell: str) -> list[str]:
    """pip commands that could fetch anything not pinned and hashed in a lock file.

    Allowed: installing a lock (`--require-hashes --no-deps --only-binary :all: -r
    requirements/X.lock`), installing the project's own wheel without dependencies, and
    building that wheel without dependencies or build isolation (which would fetch setuptools).
    """
    problems = []
    for argv in pip_invocations(shell):
        command, args = argv[0], argv[1:]
        positional = [a for i, a in enumerate(args)
                      if not a.startswith("-") and (i == 0 or args[i - 1] not in
                                                    ("-r", "--wheel-dir", "--only-binary"))]
        if command == "install" and "-r" in args:
            lock = args[args.index("-r") + 1]
            ok = (re.fullmatch(r"requirements/\w+\.lock", lock) and "--require-hashes" in args
                  and "--no-deps" in args and ":all:" in args and "--only-binary" in args
                  and not positional and "--upgrade" not in args and "-U" not in args)
        elif command == "install":
            ok = "--no-deps" in args and bool(positional) and all(
                re.fullmatch(r"/wheels/[\w*.-]*\.whl", p) for p in positional)
        elif command == "wheel":
            ok = ("--no-deps" in args and "--no-build-isolation" in args
                  and positional == ["."])
        else:
            ok = command in ("check", "list", "freeze", "--version")
        if not ok:
            problems.append(" ".join(argv))
    return problems


def stage_locks(stage: list[dockerfile.Command]) -> set[str]:
    locks = set()
    for command in stage:
        if command.cmd == "RUN":
            for argv in pip_invocations(" ".join(command.value)):
                if argv[0] == "install" and "-r" in argv:
                    locks.add(argv[argv.index("-r") + 1].removeprefix("requirements/"))
    return locks


def test_the_lock_files_exist_and_say_how_they_are_made():
    for name in LOCKS:
        text = (REQUIREMENTS / name).read_text()
        assert "make lock" in text.split("\n", 3)[1], f"{name}: header names `make lock`"
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile[makefile.index("\nlock:"):]
    recipe = recipe[:recipe.index("\n\n")]
    assert "--generate-hashes" in makefile
    assert set(re.findall(r"-o requirements/(\S+)", recipe)) == set(LOCKS)
    # resolved for the images' Python and platform, not the machine that runs `make lock`
    assert re.search(rf"--python-version {re.escape(image_python())}\s", makefile)
    assert "--python-platform x86_64-unknown-linux-gnu" in makefile


@pytest.mark.parametrize("name", LOCKS)
def test_every_lock_entry_is_pinned_with_sha256_hashes(name: str):
    text = (REQUIREMENTS / name).read_text()
    assert lock_entries(text), f"{name} is empty"
    assert lock_problems(text) == []


def test_the_lock_checks_catch_unhashed_and_loose_entries():
    good = "aiohttp==3.14.5 \\\n    --hash=sha256:" + "a" * 64 + "\n    # via x\n"
    assert lock_problems(good) == []
    assert lock_problems(good + "yarl==1.25.1\n") == ["yarl==1.25.1"]
    assert lock_problems("yarl>=1.9 --hash=sha256:" + "b" * 64 + "\n")
    assert lock_problems("-e .\n") == ["-e ."]
    assert lock_problems("yarl==1.25.1 --hash=md5:" + "c" * 32 + "\n")


@pytest.mark.parametrize("name", LOCKS)
def test_lock_pins_every_requirement_of_pyproject_within_its_specifier(name: str):
    """A dependency added or a floor raised in pyproject.toml without `make lock` fails here."""
    pins = lock_pins(name)
    env = lock_environment()
    for requirement in lock_inputs(name):
        if requirement.marker and not requirement.marker.evaluate(env):
            continue
        package = canonicalize_name(requirement.name)
        assert package in pins, f"{name} lacks {requirement} ({LOCKS[name]}): run `make lock`"
        assert requirement.specifier.contains(pins[package], prereleases=True), (
            f"{name} pins {package}=={pins[package]}, outside {requirement}: run `make lock`"
        )
    assert canonicalize_name(pyproject()["project"]["name"]) not in pins


def test_the_adk_image_runs_the_same_versions_as_the_bot_image():
    bot, adk = lock_pins("bot.lock"), lock_pins("adk.lock")
    assert {p: v for p, v in adk.items() if p in bot} == bot
    assert "google-adk" in adk and "google-adk" not in bot


@pytest.mark.parametrize("package", LAST_VULNERABLE)
def test_dependency_floors_exclude_published_advisories(package: str):
    last_vulnerable, advisory = LAST_VULNERABLE[package]
    (requirement,) = [r for r in lock_inputs("bot.lock")
                      if canonicalize_name(r.name) == package]
    assert not requirement.specifier.contains(last_vulnerable, prereleases=True), (
        f"{requirement} admits {package} {last_vulnerable} ({advisory})"
    )
    for name in ("bot.lock", "adk.lock"):
        assert lock_pins(name)[package] > Version(last_vulnerable), name


def test_dockerfile_installs_only_from_the_hashed_locks():
    runs = [" ".join(c.value) for c in dockerfile_commands() if c.cmd == "RUN"]
    assert any(pip_invocations(run) for run in runs)
    for run in runs:
        assert pip_problems(run) == [], run
    copied = {Path(source).name for c in dockerfile_commands() if c.cmd == "COPY"
              and not any(f.startswith("--from=") for f in c.flags) for source in c.value[:-1]}
    stages = dockerfile_stages()
    installed = set().union(*(stage_locks(stage) for stage in stages.values()))
    assert installed == set(LOCKS)
    assert installed <= copied, "each lock the Dockerfile installs is copied into the build"
    # each runtime image's virtualenv comes from a builder that installed its own lock
    for image, lock in [(list(stages)[-1], "bot.lock"), ("adk-demo", "adk.lock")]:
        (source,) = [f.removeprefix("--from=") for c in stages[image] if c.cmd == "COPY"
                     for f in c.flags if f.startswith("--from=")]
        builder = stages[source]
        while lock not in stage_locks(builder) and builder[0].value[0] in stages:
            builder = stages[builder[0].value[0]]
        assert lock in stage_locks(builder), (image, source)


def test_the_dockerfile_check_catches_unpinned_installs():
    assert pip_problems("python -m venv /opt/venv && /opt/venv/bin/pip install --upgrade pip")
    assert pip_problems("/opt/venv/bin/pip install '.[adk]'")
    assert pip_problems("pip install /wheels/*.whl")  # resolves the wheel's dependencies
    assert pip_problems("pip install -r requirements/bot.lock")  # hashes not required
    assert pip_problems("pip wheel --no-deps --wheel-dir /wheels .")  # fetches setuptools
    assert pip_problems("python -m pip install --require-hashes --no-deps --only-binary :all: "
                        "-r requirements/bot.lock uvicorn")
    assert pip_problems(
        "/opt/build/bin/pip --python /opt/venv/bin/python install --require-hashes --no-deps "
        "--only-binary :all: -r requirements/bot.lock && pip install --no-deps /wheels/*.whl"
    ) == []


# ---- Slack scopes --------------------------------------------------------------------------

# Every Slack Web API method bot/ calls, and the bot scopes it needs. A new call fails
# test_every_called_method_has_a_scope_decision until it is added here.
METHOD_SCOPES: dict[str, set[str]] = {
    "chat_postMessage": {"chat:write"},
    "chat_update": {"chat:write"},
    "chat_delete": {"chat:write"},  # removing a half-written live answer after a crash
    "chat_postEphemeral": {"chat:write"},
    "chat_startStream": {"chat:write"},
    "chat_appendStream": {"chat:write"},
    "chat_stopStream": {"chat:write"},
    "assistant_threads_setStatus": {"chat:write"},
    "assistant_threads_setSuggestedPrompts": {"assistant:write"},
    "reactions_add": {"reactions:write"},
    "reactions_remove": {"reactions:write"},
    "users_info": {"users:read"},
    "conversations_replies": {"channels:history", "groups:history", "im:history",
                              "mpim:history"},
    "conversations_history": {"channels:history", "groups:history", "im:history",
                              "mpim:history"},
    "usergroups_users_list": {"usergroups:read"},
    "files_upload_v2": {"files:write"},
    "auth_test": set(),
}
# Not method calls: receiving events and commands, and downloading files (url_private).
OTHER_SCOPES = {
    "app_mentions:read",  # app_mention events
    "commands",  # /adk-reset
    "files:read",  # downloading url_private / url_private_download of attachments
}
CALL = re.compile(
    r"\.(chat_\w+|assistant_threads_\w+|reactions_\w+|users_\w+|conversations_\w+"
    r"|usergroups_\w+|files_\w+|auth_test)\("
)


def called_methods() -> dict[str, list[str]]:
    calls: dict[str, list[str]] = {}
    for path in sorted((ROOT / "bot").rglob("*.py")):
        for match in CALL.finditer(path.read_text()):
            calls.setdefault(match.group(1), []).append(str(path.relative_to(ROOT)))
    return calls


def required_scopes() -> set[str]:
    lines = (SLACK / "required_scopes.txt").read_text().splitlines()
    return {line.strip() for line in lines if line.strip() and not line.startswith("#")}


def test_the_scan_finds_the_calls():
    calls = called_methods()
    assert {"chat_postMessage", "auth_test", "conversations_replies"} <= calls.keys()


def test_every_called_method_has_a_scope_decision():
    unknown = {m: where for m, where in called_methods().items() if m not in METHOD_SCOPES}
    assert not unknown, f"add these Slack methods to METHOD_SCOPES with their scopes: {unknown}"


def test_required_scopes_cover_the_calls():
    needed = set().union(*(METHOD_SCOPES[m] for m in called_methods())) | OTHER_SCOPES
    assert needed <= required_scopes(), needed - required_scopes()
    uses_files = any("url_private" in p.read_text() for p in (ROOT / "bot").rglob("*.py"))
    assert uses_files == ("files:read" in required_scopes())


@pytest.mark.parametrize("name", ["manifest.http.yaml", "manifest.socket-mode.yaml"])
def test_manifest_scopes_match_required_scopes(name: str):
    manifest = load_one(SLACK / name)
    scopes = set(manifest["oauth_config"]["scopes"]["bot"])
    assert scopes == required_scopes()
    needed = set().union(*(METHOD_SCOPES[m] for m in called_methods())) | OTHER_SCOPES
    assert needed <= scopes
    settings = manifest["settings"]
    assert settings["socket_mode_enabled"] is (name == "manifest.socket-mode.yaml")
