"""The aggregator's Prometheus metrics."""

from prometheus_client import Counter

AGGREGATIONS = Counter(
    "qnet_aggregator_aggregations_total", "Aggregations by method and result code (OK or the error code)",
    ["method", "code"],
)
