"""The Grafana dashboard and the alert rules name only metrics the code exports, and promtool accepts both.

qnet's metric names are read from the code (every prometheus_client Counter, Gauge, Histogram and Summary in
services/ and qnet_common/, with the series each type exposes); Envoy's are checked against a real Envoy's
/stats/prometheus in tests/e2e/test_dashboard_metrics.py.
"""

from __future__ import annotations

import ast
import json
import pathlib
import re
import shutil
import subprocess

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "qnet-dashboard.json"
RULES = ROOT / "deploy" / "k8s" / "components" / "prometheus-operator" / "prometheusrule.yaml"
METRIC_TYPES = {"Counter", "Gauge", "Histogram", "Summary"}
#: The series each prometheus_client type exposes for a metric named `name` (a Counter's `_total` is its own).
SERIES = {
    "Counter": ("_total", "_created"),
    "Gauge": ("",),
    "Histogram": ("_bucket", "_count", "_sum", "_created"),
    "Summary": ("", "_count", "_sum", "_created"),
}
#: Series Prometheus makes itself for every target it scrapes.
SCRAPE_SERIES = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
KEYWORDS = {"and", "or", "unless", "bool", "by", "without", "on", "ignoring", "group_left", "group_right", "offset",
            "inf", "nan"}
#: Grafana's variables, replaced by values of their kind before promtool reads a panel's query.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h", "$backend": ".*"}


def exported_metrics() -> dict[str, str]:
    """Every metric the code defines: name -> type (Counter, Gauge, Histogram, Summary)."""
    found: dict[str, str] = {}
    for path in [*ROOT.joinpath("services").rglob("*.py"), *ROOT.joinpath("qnet_common").rglob("*.py")]:
        tree = ast.parse(path.read_text(), str(path))
        # Only names imported from prometheus_client (collections.Counter is not a metric).
        imported = {alias.asname or alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                    and node.module == "prometheus_client" for alias in node.names if alias.name in METRIC_TYPES}
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            func = node.func
            kind = func.id if isinstance(func, ast.Name) and func.id in imported else (
                func.attr if isinstance(func, ast.Attribute) and func.attr in METRIC_TYPES
                and isinstance(func.value, ast.Name) and func.value.id == "prometheus_client" else None)
            name = node.args[0]
            if kind and isinstance(name, ast.Constant) and isinstance(name.value, str):
                found[name.value] = kind
    return found


def exported_series() -> set[str]:
    series = set(SCRAPE_SERIES)
    for name, kind in exported_metrics().items():
        base = name.removesuffix("_total") if kind == "Counter" else name
        series |= {base + suffix for suffix in SERIES[kind]}
    return series


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, keywords, labels and durations left out)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    text = re.sub(r"\{[^{}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\boffset\s+-?[\w$]+", " ", text)
    text = re.sub(r"(?<![\w:])\d+(\.\d*)?([eE][+-]?\d+)?", " ", text)  # numbers
    names = set()
    for match in re.finditer(r"(?<![\w$])[A-Za-z_:][\w:]*", text):
        word = match.group(0)
        if word.lower() in KEYWORDS or re.match(r"\s*\(", text[match.end():]):
            continue  # a keyword, a function or an aggregation
        names.add(word)
    return names


def dashboard_queries() -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and every label_values() variable of the dashboard."""
    board = json.loads(DASHBOARD.read_text())
    queries = []

    def walk(panels: list[dict]) -> None:
        for panel in panels:
            for target in panel.get("targets", []):
                queries.append((f"panel {panel['title']!r} {target['refId']}", target["expr"]))
            walk(panel.get("panels", []))

    walk(board["panels"])
    for variable in board["templating"]["list"]:
        query = variable.get("query")
        query = query.get("query") if isinstance(query, dict) else query
        match = re.fullmatch(r"label_values\((.+),\s*\w+\)", query or "")
        if variable["type"] == "query":
            assert match, f"variable {variable['name']}: expected label_values(<selector>, <label>), got {query!r}"
            queries.append((f"variable {variable['name']}", match.group(1)))
    return queries


def alert_rules() -> list[dict]:
    document = yaml.safe_load(RULES.read_text())
    assert document["kind"] == "PrometheusRule"
    return document["spec"]["groups"]


def promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool missing: scripts/test_tools.sh installs Debian's prometheus package (make test-tools)"
    return found


def test_the_metric_names_come_from_the_code():
    metrics = exported_metrics()
    assert metrics["qnet_gateway_websocket_connections"] == "Gauge"
    assert metrics["qnet_scheduler_job_duration_seconds"] == "Histogram"
    assert metrics["qnet_backend_tasks_total"] == "Counter"
    assert "qnet_backend_task_queue_seconds_bucket" in exported_series()
    assert "qnet_backend_tasks_total_total" not in exported_series()


@pytest.mark.parametrize(("expr", "names"), [
    ('sum by (le, backend) (rate(qnet_a_bucket{backend=~"$backend", x="by (y)"}[$__rate_interval]))',
     {"qnet_a_bucket"}),
    ("histogram_quantile(0.95, sum by (le) (rate(b_bucket[5m]))) > 1e3", {"b_bucket"}),
    ("absent(up{job=\"qnet-scheduler\"} == 1)", {"up"}),
    ("a / on (backend) group_left (name) b offset 5m and c unless d", {"a", "b", "c", "d"}),
    ("sum without (instance) (rate(x[5m:1m]))", {"x"}),
])
def test_metric_names_are_read_out_of_promql(expr, names):
    assert metric_names(expr) == names


def test_every_dashboard_query_uses_exported_metrics():
    series = exported_series()
    queries = dashboard_queries()
    assert len(queries) >= 20
    unknown = {}
    for where, expr in queries:
        names = metric_names(expr)
        assert names, f"{where}: no metric in {expr!r}"
        missing = {n for n in names if n not in series and not n.startswith("envoy_")}
        if missing:
            unknown[where] = sorted(missing)
    assert not unknown, f"metrics the code does not export: {unknown}"


def test_the_dashboard_covers_jobs_latency_queues_devices_websockets_and_envoy():
    used = set().union(*(metric_names(expr) for _, expr in dashboard_queries()))
    for needed in ("qnet_scheduler_jobs_finished_total", "qnet_scheduler_job_duration_seconds_bucket",
                   "qnet_backend_task_execution_seconds_bucket", "qnet_backend_task_queue_seconds_bucket",
                   "qnet_backend_queue_depth", "qnet_backend_online", "qnet_gateway_websocket_connections",
                   "qnet_grpc_server_handling_seconds_bucket", "envoy_http_downstream_rq_xx"):
        assert needed in used, needed
    board = json.loads(DASHBOARD.read_text())
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in board["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
    assert {"datasource", "backend"} <= {v["name"] for v in board["templating"]["list"]}


def test_every_alert_uses_exported_metrics():
    series = exported_series()
    rules = [rule for group in alert_rules() for rule in group["rules"]]
    assert rules
    for rule in rules:
        names = metric_names(rule["expr"])
        assert names and names <= series, f"{rule['alert']}: {sorted(names - series)} are not exported by the code"


def test_promtool_accepts_the_alert_rules(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": alert_rules()}))
    result = subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_promtool_parses_every_dashboard_query(tmp_path):
    """Each panel's query, its Grafana variables filled in, as a recording rule: promtool parses the PromQL."""
    rules = []
    for index, (where, expr) in enumerate(dashboard_queries()):
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, f"{where}: a Grafana variable promtool cannot read: {expr}"
        rules.append({"record": f"qnet:dashboard_query:{index}", "expr": expr})
    path = tmp_path / "dashboard-rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_refuses_a_broken_rule(tmp_path):
    """The check can fail: a rule with a syntax error is refused."""
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "x", "rules": [
        {"alert": "Broken", "expr": "sum(rate(qnet_backend_tasks_total[5m])"}]}]}))
    result = subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
