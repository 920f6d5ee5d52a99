"""make run's ports are written once (qnet_common.settings.DEFAULT_PORTS); what documents or scrapes them agrees."""

from __future__ import annotations

import pathlib
import re

from qnet_common.settings import DEFAULT_PORTS, for_service

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_each_service_starts_on_its_default_ports():
    for service, (grpc_port, metrics_port) in DEFAULT_PORTS.items():
        settings = for_service(service, env={})
        assert (settings.grpc_port, settings.metrics_port) == (grpc_port, metrics_port)


def test_the_shipped_prometheus_config_scrapes_the_default_metrics_ports():
    config = (ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text()
    jobs = dict(re.findall(r"job_name: qnet-(\w+)\n(?:.*\n)*?.*targets: \[\"127\.0\.0\.1:(\d+)\"\]", config))
    assert {s: int(jobs[s]) for s in DEFAULT_PORTS} == {s: m for s, (_, m) in DEFAULT_PORTS.items()}


def test_the_readme_service_table_lists_the_default_ports():
    readme = (ROOT / "README.md").read_text()
    for service, (grpc_port, metrics_port) in DEFAULT_PORTS.items():
        row = re.search(rf"^\| {service} \| `services/{service}/` \|(.*)$", readme, re.M)
        assert row is not None, service
        assert str(grpc_port) in row.group(1) and str(metrics_port) in row.group(1), row.group(0)
