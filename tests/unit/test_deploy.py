"""The deploy/ files, checked offline (no Docker engine, no cluster, no network).

- every YAML file under deploy/ parses (duplicate keys are an error);
- the Kubernetes manifests validate against the Kubernetes JSON schemas of a fixed version
  (kubernetes-validate ships them in the wheel; strict mode rejects unknown fields), and the
  Deployment, Service, PDB, HPA, ConfigMap and Secret say what a deployment needs;
- the compose file validates against the Compose spec schema vendored by check-jsonschema, its
  bot settings are real settings listed in .env.example, its build targets exist;
- the Dockerfile (parsed by the `dockerfile` package, BuildKit's own parser) is multi-stage,
  slim, non-root, has health checks and bakes no secret in;
- the Slack manifests grant every scope the Slack Web API calls in bot/ need.
"""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path
from typing import Any

import dockerfile
import jsonschema
import kubernetes_validate
import pytest
import yaml

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
    for rel in ["Dockerfile", "docker-compose.yml", "README.md", "slack/required_scopes.txt",
                "slack/manifest.http.yaml", "slack/manifest.socket-mode.yaml"]:
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
