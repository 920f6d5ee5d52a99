"""Settings: qnet_common/settings.py is the one module that reads the environment; each service parses its own type,
which carries the common settings and that service's knobs, no other's; what the README says matches."""

from __future__ import annotations

import ast
import dataclasses
import os
import pathlib
import re
import subprocess
import sys

import pytest

from qnet_common import settings as settings_module
from qnet_common.settings import (
    DEFAULT_PORTS,
    SETTINGS_OF,
    DatabaseSettings,
    EnvoySettings,
    LauncherSettings,
    MigrationSettings,
    OperatorCliSettings,
    PgServerSettings,
    Settings,
    SettingsError,
    for_service,
    variables,
)

ROOT = pathlib.Path(__file__).resolve().parents[2]
SETTINGS_PY = "qnet_common/settings.py"

# --- nothing outside settings.py reads the environment -----------------------------------------------------------

#: What reads the process environment through the os module.
ENVIRONMENT = {"environ", "environb", "getenv", "getenvb"}
#: Reads of the environment allowed outside settings.py, by (module, the expression), each with its reason.
EXCEPTIONS = {
    ("services/mesh.py", "dict(os.environ)"):
        "the launcher passes its whole environment on to the services it starts (their own settings read it); "
        "it reads no value of it",
}


def environment_reads(source: str) -> list[str]:
    """Each expression of `source` that touches os.environ, os.environb or os.getenv (through any name of the os
    module, `from os import ...` or `__import__("os")`); a `dict(...)` copy of the whole is given whole."""
    tree = ast.parse(source)
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    aliases = {"os"} | {a.asname or a.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                        for a in node.names if a.name == "os"}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "os":
            found += [f"from os import {a.name}" for a in node.names if a.name in ENVIRONMENT | {"*"}]
        elif isinstance(node, ast.Attribute) and node.attr in ENVIRONMENT and (
                isinstance(node.value, ast.Name) and node.value.id in aliases
                or isinstance(node.value, ast.Call) and getattr(node.value.func, "id", "") == "__import__"):
            parent = parents.get(node)
            whole = (isinstance(parent, ast.Call) and getattr(parent.func, "id", "") == "dict"
                     and parent.args == [node] and not parent.keywords)
            found.append(ast.unparse(parent if whole else node))
    return found


def modules() -> list[pathlib.Path]:
    return sorted(p for folder in ("services", "qnet_common") for p in (ROOT / folder).rglob("*.py"))


def test_the_scanner_finds_every_way_of_reading_the_environment():
    source = """
import os
import os as system
from os import environ, getenv
from os import path
a = os.environ.get("QNET_X")
b = os.getenv("QNET_Y", "")
c = system.environ["QNET_Z"]
d = os.environb
e = __import__("os").environ
f = dict(os.environ)
g = os.path.join("a", "b"); environment = {}; h = environment.get("x"); i = settings.environ
"""
    assert sorted(environment_reads(source)) == sorted([
        "from os import environ", "from os import getenv", "os.environ", "os.getenv", "system.environ",
        "os.environb", "__import__('os').environ", "dict(os.environ)",
    ])
    assert environment_reads("import os\nvalue = os.cpu_count()\nos.path.exists('x')\n") == []


def test_only_settings_reads_the_environment():
    found = {(str(p.relative_to(ROOT)), expression)
             for p in modules() for expression in environment_reads(p.read_text())}
    assert {expression for path, expression in found if path == SETTINGS_PY}, "the scan must see settings.py read"
    others = {f for f in found if f[0] != SETTINGS_PY}
    stray = others - set(EXCEPTIONS)
    assert not stray, ("read the environment through qnet_common/settings.py (a settings type there) instead: "
                       f"{sorted(stray)}")
    assert others == set(EXCEPTIONS), f"stale exceptions: {set(EXCEPTIONS) - others}"


def test_the_client_library_reads_its_environment_in_one_place():
    """qnet_client is installed on its own, with its own configuration: qnet_client/_core.py reads it."""
    found = {str(p.relative_to(ROOT)) for p in sorted((ROOT / "qnet_client").rglob("*.py"))
             if environment_reads(p.read_text())}
    assert found == {"qnet_client/_core.py"}


def test_the_launcher_passes_its_environment_on_to_the_services_with_its_wiring_on_top(tmp_path):
    """The one exception above: the children get the launcher's environment (their settings read it)."""
    from services.mesh import TOPOLOGIES, Mesh

    mesh = Mesh(LauncherSettings(data_dir=tmp_path, service_key="k"), ephemeral=True, http_port=0, admin_port=0)
    env = mesh._env(TOPOLOGIES["single"][0], 50052, 9102)
    passed = {k: v for k, v in os.environ.items() if not k.startswith(("QNET_", "PYTHON"))}
    assert {k: env[k] for k in passed} == passed
    assert (env["QNET_SERVICE_KEY"], env["QNET_DATA_DIR"], env["QNET_GRPC_PORT"]) == ("k", str(tmp_path), "0")


# --- each program parses its own type -----------------------------------------------------------------------------

#: The settings type of each process that is not a service (the services': SETTINGS_OF), as the README names it.
PROGRAMS = {"launcher": LauncherSettings, "migrate": MigrationSettings, "keys": DatabaseSettings}
#: Each module that parses settings of its own, and the type it parses.
PARSERS = {
    "services/mesh.py": LauncherSettings,
    "qnet_common/migrate.py": MigrationSettings,
    "qnet_common/keys.py": DatabaseSettings,
    "services/backends/cli.py": OperatorCliSettings,
    "qnet_common/pgserver.py": PgServerSettings,
    "qnet_common/envoy_process.py": EnvoySettings,
}
#: Every settings type of the module.
KINDS = [k for k in vars(settings_module).values()
         if isinstance(k, type) and dataclasses.is_dataclass(k) and k.__module__ == settings_module.__name__]


def parsed_types(path: pathlib.Path) -> set[str]:
    """The names of the settings types a module parses (`X.from_env(...)`, `for_service(...)`)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "from_env":
            found.add(ast.unparse(node.func.value))
        elif isinstance(node, ast.Call) and getattr(node.func, "id", "") == "for_service":
            found.add("for_service")
    return found


def test_each_program_parses_its_own_type_and_services_get_theirs_from_the_bootstrap():
    parsers = {str(p.relative_to(ROOT)): parsed_types(p) for p in modules() if str(p.relative_to(ROOT)) != SETTINGS_PY}
    assert {path: names for path, names in parsers.items() if names} == {
        **{path: {kind.__name__} for path, kind in PARSERS.items()},
        "qnet_common/grpcserver.py": {"for_service"},
    }
    assert set(SETTINGS_OF) == set(DEFAULT_PORTS) == {p.parent.name for p in (ROOT / "services").glob("*/main.py")}


def test_every_type_is_a_frozen_dataclass_with_defaults_that_parse_from_nothing():
    assert {*SETTINGS_OF.values(), *PROGRAMS.values(), *PARSERS.values(), Settings} == set(KINDS)
    for kind in KINDS:
        assert kind.from_env({}) == kind(), kind
        with pytest.raises(dataclasses.FrozenInstanceError):
            kind().__setattr__(dataclasses.fields(kind)[0].name, None)


def read_constants(kind: type) -> set[str]:
    """The variable names written in the `_read` of the type and of the types it extends (settings.py's AST)."""
    classes = {n.name: n for n in ast.walk(ast.parse((ROOT / SETTINGS_PY).read_text())) if isinstance(n, ast.ClassDef)}
    found = set()
    for klass in kind.__mro__:
        body = classes[klass.__name__].body if klass.__name__ in classes else []
        for method in (n for n in body if isinstance(n, ast.FunctionDef)):
            if method.name == "_read":
                found |= {n.value for n in ast.walk(method) if isinstance(n, ast.Constant) and isinstance(n.value, str)
                          and re.fullmatch(r"(QNET|ENVOY)_[A-Z_]+", n.value)}
    return found


def test_variables_lists_what_each_type_parses():
    for kind in KINDS:
        assert variables(kind) == read_constants(kind), kind
    in_module = set(re.findall(r'"((?:QNET|ENVOY)_[A-Z_]+)"', (ROOT / SETTINGS_PY).read_text()))
    assert in_module == set().union(*(variables(k) for k in KINDS))  # no variable read outside a _read


# --- a service's settings: the common part and its own knobs, no other's ----------------------------------------

COMMON = {"QNET_DATA_DIR", "QNET_DATABASE_URL", "QNET_LOG_LEVEL", "QNET_HOST", "QNET_GRPC_PORT", "QNET_METRICS_PORT",
          "QNET_ADVERTISE_ADDR", "QNET_SERVICE_KEY", "QNET_GRACE_S", "QNET_DRAIN_DELAY_S", "QNET_DB_POOL_SIZE"}
OWN = {
    "scheduler": {"QNET_AGGREGATOR_ADDR", "QNET_EXECUTE_WAIT_S", "QNET_WORKERS", "QNET_LEASE_S"},
    "backends": {"QNET_DEVICES", "QNET_DEVICE_STATUS", "QNET_FAULTS"},
    "aggregator": set(),
    "network": {"QNET_SCHEDULER_ADDR"},
    "gateway": {"QNET_SCHEDULER_ADDR", "QNET_WS_PING_S", "QNET_WS_MAX_BUFFER"},
}
#: One valid value of each variable, and the field and value it parses to.
VALID = {
    "QNET_DATA_DIR": ("/srv/qnet", "data_dir", pathlib.Path("/srv/qnet")),
    "QNET_DATABASE_URL": ("postgresql://db/qnet", "database_url", "postgresql://db/qnet"),
    "QNET_LOG_LEVEL": ("debug", "log_level", "DEBUG"),
    "QNET_HOST": ("0.0.0.0", "host", "0.0.0.0"),
    "QNET_GRPC_PORT": ("6000", "grpc_port", 6000),
    "QNET_METRICS_PORT": ("6001", "metrics_port", 6001),
    "QNET_ADVERTISE_ADDR": ("10.0.0.7:6000", "advertise_addr", "10.0.0.7:6000"),
    "QNET_SERVICE_KEY": ("mesh-key", "service_key", "mesh-key"),
    "QNET_GRACE_S": ("4.5", "grace_s", 4.5),
    "QNET_DRAIN_DELAY_S": ("2", "drain_delay_s", 2.0),
    "QNET_DB_POOL_SIZE": ("3", "db_pool_size", 3),
    "QNET_AGGREGATOR_ADDR": ("dns:///aggregator:50053", "aggregator_addr", "dns:///aggregator:50053"),
    "QNET_EXECUTE_WAIT_S": ("60", "execute_wait_s", 60.0),
    "QNET_WORKERS": ("3", "workers", 3),
    "QNET_LEASE_S": ("12", "lease_s", 12.0),
    "QNET_DEVICES": (" ibm_brisbane, local_simulator ,", "devices", ("ibm_brisbane", "local_simulator")),
    "QNET_DEVICE_STATUS": ("rigetti_aspen=maintenance", "device_status", {"rigetti_aspen": "maintenance"}),
    "QNET_FAULTS": ("ibm_brisbane=unavailable,ionq_aria=slow", "faults",
                    {"ibm_brisbane": "unavailable", "ionq_aria": "slow"}),
    "QNET_SCHEDULER_ADDR": ("ipv4:10.0.0.1:50051,10.0.0.2:50051", "scheduler_addr",
                            "ipv4:10.0.0.1:50051,10.0.0.2:50051"),
    "QNET_WS_PING_S": ("5", "ws_ping_s", 5.0),
    "QNET_WS_MAX_BUFFER": ("50", "ws_max_buffer", 50),
    "QNET_HTTP_PORT": ("18080", "http_port", 18080),
    "QNET_ADMIN_PORT": ("19901", "admin_port", 19901),
    "QNET_DEV_API_KEY": ("devkey", "dev_api_key", "devkey"),
    "QNET_BACKENDS_ADDR": ("10.0.0.9:50052", "backends_addr", "10.0.0.9:50052"),
    "QNET_ADMIN_KEY": ("operator", "admin_key", "operator"),
    "QNET_TEST_POSTGRES_DSN": ("postgresql://postgres@db/test", "test_dsn", "postgresql://postgres@db/test"),
    "ENVOY_BIN": ("/opt/envoy/bin/envoy", "binary", "/opt/envoy/bin/envoy"),
}
#: Malformed values, each refused naming its variable.
MALFORMED = [
    ("QNET_GRPC_PORT", "http"), ("QNET_METRICS_PORT", "-1"), ("QNET_GRACE_S", "soon"), ("QNET_DRAIN_DELAY_S", "-2"),
    ("QNET_DB_POOL_SIZE", "1"), ("QNET_DB_POOL_SIZE", "eight"), ("QNET_EXECUTE_WAIT_S", "30s"), ("QNET_WORKERS", "0"),
    ("QNET_WORKERS", "many"), ("QNET_LEASE_S", "0.01"), ("QNET_DEVICE_STATUS", "rigetti_aspen"),
    ("QNET_FAULTS", "ibm_brisbane=unavailable,=slow"), ("QNET_WS_PING_S", "0"), ("QNET_WS_MAX_BUFFER", "lots"),
    ("QNET_HTTP_PORT", "eighty"), ("QNET_ADMIN_PORT", "9901.5"),
]


def own_fields(kind: type) -> set[str]:
    return {f.name for f in dataclasses.fields(kind)} - {f.name for f in dataclasses.fields(Settings)}


def test_each_service_reads_the_common_variables_and_its_own_only():
    assert variables(Settings) == COMMON
    for service, kind in SETTINGS_OF.items():
        assert variables(kind) == COMMON | OWN[service], service
    assert variables(LauncherSettings) == {"QNET_DATA_DIR", "QNET_DATABASE_URL", "QNET_HOST", "QNET_SERVICE_KEY",
                                           "QNET_HTTP_PORT", "QNET_ADMIN_PORT", "QNET_DEV_API_KEY"}
    assert variables(MigrationSettings) == {"QNET_DATA_DIR", "QNET_DATABASE_URL", "QNET_LOG_LEVEL"}


@pytest.mark.parametrize("service", SETTINGS_OF)
def test_a_service_parses_its_variables_and_carries_no_other_services_knobs(service):
    kind = SETTINGS_OF[service]
    everything = {name: raw for name, (raw, _, _) in VALID.items()}
    settings = for_service(service, everything)  # every variable of every process set: it takes its own
    assert type(settings) is kind
    for name in COMMON | OWN[service]:
        _, attribute, expected = VALID[name]
        assert getattr(settings, attribute) == expected, name
    others = set().union(*(own_fields(k) for k in SETTINGS_OF.values())) - own_fields(kind)
    assert others, service
    for attribute in others | {"http_port", "dev_api_key", "admin_key", "test_dsn", "binary"}:
        assert not hasattr(settings, attribute), f"{service}'s settings carry {attribute}"


@pytest.mark.parametrize("service", SETTINGS_OF)
def test_a_service_refuses_its_malformed_variables_naming_them_and_ignores_the_others(service):
    kind = SETTINGS_OF[service]
    for name, raw in MALFORMED:
        if name in variables(kind):
            with pytest.raises(SettingsError, match=rf"^{name}\b"):
                for_service(service, {name: raw})
        else:  # another service's knob (the launcher passes every variable to every service): not its concern
            assert for_service(service, {name: raw}) == for_service(service, {})
    assert any(name in variables(kind) for name, _ in MALFORMED)


def test_a_service_gets_its_default_ports_unless_the_environment_names_others():
    for service, (grpc_port, metrics_port) in DEFAULT_PORTS.items():
        settings = for_service(service, {})
        assert (settings.grpc_port, settings.metrics_port) == (grpc_port, metrics_port)
        assert for_service(service, {"QNET_GRPC_PORT": "0"}).grpc_port == 0


def test_no_type_redefines_a_field_of_the_type_it_extends():
    for kind in KINDS:
        declared = set(vars(kind).get("__annotations__", {}))
        inherited = {f.name for base in kind.__mro__[1:] if dataclasses.is_dataclass(base)
                     for f in dataclasses.fields(base)}
        assert not declared & inherited, f"{kind.__name__} redefines {declared & inherited}"


def attributes_read(folder: pathlib.Path) -> set[str]:
    return {n.attr for p in folder.rglob("*.py") for n in ast.walk(ast.parse(p.read_text()))
            if isinstance(n, ast.Attribute)}


@pytest.mark.parametrize("service", SETTINGS_OF)
def test_a_services_own_knobs_are_read_by_that_service(service):
    unread = own_fields(SETTINGS_OF[service]) - attributes_read(ROOT / "services" / service)
    assert not unread, f"{service}'s settings carry {unread}, which services/{service}/ never reads"


def test_the_other_programs_parse_their_variables_and_refuse_malformed_ones():
    for kind in [*PROGRAMS.values(), *PARSERS.values()]:
        settings = kind.from_env({name: VALID[name][0] for name in variables(kind)})
        for name in variables(kind):
            _, attribute, expected = VALID[name]
            assert getattr(settings, attribute) == expected, (kind.__name__, name)
    for name, raw in MALFORMED:
        if name in variables(LauncherSettings) - COMMON:
            with pytest.raises(SettingsError, match=rf"^{name}\b"):
                LauncherSettings.from_env({name: raw})
    assert OperatorCliSettings.from_env({"QNET_BACKENDS_ADDR": ""}).backends_addr == "127.0.0.1:50052"


def run_module(module: str, env: dict[str, str], tmp_path: pathlib.Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": f"{ROOT}:{ROOT / 'gen'}",
                               "QNET_DATA_DIR": str(tmp_path), **env})


@pytest.mark.parametrize(("module", "variable", "raw"), [
    ("services.scheduler.main", "QNET_WORKERS", "many"),
    ("services.gateway.main", "QNET_WS_PING_S", "often"),
    ("services.mesh", "QNET_HTTP_PORT", "eighty"),
])
def test_a_process_with_a_malformed_variable_stops_at_start_naming_it(module, variable, raw, tmp_path):
    result = run_module(module, {variable: raw}, tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"bad configuration: {variable}={raw!r}" in result.stderr
    assert "Traceback" not in result.stderr and "QNET_READY" not in result.stdout


# --- the README's table -------------------------------------------------------------------------------------------


def readme_section() -> str:
    readme = (ROOT / "README.md").read_text()
    return readme.split("### Settings (environment)\n", 1)[1].split("\n## ", 1)[0]


def test_the_readme_table_says_who_reads_each_variable():
    readers = {**SETTINGS_OF, **PROGRAMS}
    words = {"all": set(readers), "services": set(SETTINGS_OF), **{name: {name} for name in readers}}
    rows = re.findall(r"^\| (`[^|]*`) \| [^|]* \| ([^|]*) \| .*$", readme_section(), re.M)
    listed = set()
    for names, cell in rows:
        said = set().union(*(words[w.strip()] for w in cell.split(",")))
        for name in re.findall(r"`(\w+)`", names):
            actual = {reader for reader, kind in readers.items() if name in variables(kind)}
            assert said == actual, f"README: {name} is read by {sorted(actual)}, the table says {cell.strip()!r}"
            listed.add(name)
    assert listed == set().union(*(variables(kind) for kind in readers.values()))
    elsewhere = set().union(*(variables(k) for k in KINDS)) - listed
    assert elsewhere == {"QNET_BACKENDS_ADDR", "QNET_ADMIN_KEY", "QNET_TEST_POSTGRES_DSN", "ENVOY_BIN"}
    for name in elsewhere:
        assert f"`{name}`" in readme_section(), name


def test_contributing_names_the_settings_type_of_a_new_service():
    text = (ROOT / "CONTRIBUTING.md").read_text().split("## Add a service", 1)[1]
    assert "SETTINGS_OF" in text and "qnet_common/settings.py" in text

