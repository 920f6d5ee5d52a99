"""make run's ports are written once (qnet_common.settings.DEFAULT_PORTS and services/mesh.py's topologies); what
documents or scrapes them agrees, and no two processes of a topology are given one port."""

from __future__ import annotations

import collections
import pathlib
import re
from dataclasses import replace

import pytest

from qnet_common.settings import DEFAULT_PORTS, LauncherSettings, for_service
from services.backends.adapters.registry import DEVICE_IDS, provider_of
from services.mesh import MAX_REPLICAS, TOPOLOGIES, check_fixed_ports, roles_of

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_each_service_starts_on_its_default_ports():
    for service, (grpc_port, metrics_port) in DEFAULT_PORTS.items():
        settings = for_service(service, env={})
        assert (settings.grpc_port, settings.metrics_port) == (grpc_port, metrics_port)


def fixed_ports(roles) -> dict[int, list[str]]:
    """Port -> the children of the roles that would listen on it (gRPC or metrics), with Envoy's two."""
    launcher = LauncherSettings()
    owners = collections.defaultdict(list, {launcher.http_port: ["envoy"], launcher.admin_port: ["envoy admin"]})
    for role in roles:
        for child, port, metrics_port in role.children():
            owners[port].append(child)
            owners[metrics_port].append(child)
    return owners


@pytest.mark.parametrize("roles", [TOPOLOGIES["single"], TOPOLOGIES["cluster"],
                                   tuple(replace(r, replicas=MAX_REPLICAS) for r in TOPOLOGIES["cluster"])],
                         ids=["make run", "cluster as shipped", "cluster with the most replicas of every role"])
def test_no_two_processes_of_a_topology_listen_on_one_port(roles):
    shared = {port: owners for port, owners in fixed_ports(roles).items() if len(owners) > 1}
    assert not shared


def test_the_launcher_refuses_more_replicas_than_its_fixed_ports_have_room_for():
    with pytest.raises(ValueError, match=r"scheduler-11 would listen on port 50120, as backends-ibm does"):
        check_fixed_ports(roles_of("cluster", {"scheduler": MAX_REPLICAS + 1}))
    with pytest.raises(ValueError, match="scheduler-2 would listen on port 50052, as backends-ibm does"):
        check_fixed_ports(roles_of("single", {"scheduler": 2}))
    check_fixed_ports(roles_of("cluster", {"scheduler": MAX_REPLICAS}))


@pytest.mark.parametrize("topology", sorted(TOPOLOGIES))
def test_each_provider_runs_in_an_adapter_service_of_its_own(topology):
    """Every device is served, and no process serves two providers' devices (one would wait for the other's
    emulation on one interpreter lock: strategy `all` would run its backends one after another)."""
    served = {role.name: dict(role.env)["QNET_DEVICES"].split(",") for role in TOPOLOGIES[topology]
              if role.service == "backends"}
    assert sorted(d for devices in served.values() for d in devices) == sorted(DEVICE_IDS)
    assert {name: {provider_of(d) for d in devices} for name, devices in served.items()} == {
        name: {name.removeprefix("backends-")} for name in served}


def test_the_shipped_prometheus_config_scrapes_make_runs_metrics_ports():
    config = (ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text()
    jobs = {job: sorted(int(p) for p in re.findall(r"127\.0\.0\.1:(\d+)", targets))
            for job, targets in re.findall(r"job_name: qnet-(\w+)\n(?:.*\n)*?.*targets: \[(.*)\]", config)}
    expected = collections.defaultdict(list)
    for role in TOPOLOGIES["single"]:
        expected[role.service] += [metrics_port for _, _, metrics_port in role.children()]
    assert {s: jobs[s] for s in expected} == {s: sorted(ports) for s, ports in expected.items()}


def test_the_readme_service_table_lists_make_runs_ports():
    readme = (ROOT / "README.md").read_text()
    for role in TOPOLOGIES["single"]:
        row = re.search(rf"^\| {role.service} \| `services/{role.service}/` \|(.*)$", readme, re.M)
        assert row is not None, role.service
        assert str(role.port) in row.group(1) and str(role.metrics_port) in row.group(1), row.group(0)
