"""Every metric the Grafana dashboard and the alert rules name is in what the running mesh really exposes: each
service's metrics port and Envoy's admin /stats/prometheus, scraped after jobs and an aggregation ran."""

from __future__ import annotations

import re
import urllib.request

from tests.e2e.test_slice import BELL
from tests.unit.test_dashboards import SCRAPE_SERIES, alert_rules, dashboard_queries, metric_names


def exposed(url: str) -> set[str]:
    with urllib.request.urlopen(url, timeout=10) as reply:
        text = reply.read().decode()
    return {match.group(1) for match in re.finditer(r"^([A-Za-z_:][\w:]*)(?:\{| )", text, re.MULTILINE)}


def test_the_dashboard_and_alerts_name_only_series_the_running_mesh_exposes(single_mesh):
    reply = single_mesh.request("POST", "/execute", {"qasm": BELL, "backends": ["ionq_simulator", "ibm_brisbane"],
                                                     "strategy": "all", "aggregate": True, "shots": 256})
    assert reply.status == 200 and reply.body["data"]["status"] == "completed", reply.body
    assert len(single_mesh.metrics) >= 5, single_mesh.metrics  # scheduler, backends, aggregator, network, gateway
    series: set[str] = set()
    for address in single_mesh.metrics.values():
        series |= exposed(f"http://{address}/metrics")
    envoy = exposed(f"{single_mesh.admin}/stats/prometheus")
    assert "envoy_http_downstream_rq_xx" in envoy
    series |= envoy
    named = {where: metric_names(expr) for where, expr in dashboard_queries()}
    named |= {rule["alert"]: metric_names(rule["expr"]) for group in alert_rules() for rule in group["rules"]}
    missing = {where: sorted(names - series - SCRAPE_SERIES) for where, names in named.items()
               if names - series - SCRAPE_SERIES}
    assert not missing, f"not exposed by the running mesh: {missing}"
