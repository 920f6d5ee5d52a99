"""One method per REST route, written once for both clients: each builds a `Call` and hands it to `_call`,
which the sync client runs at once and the asyncio client returns as a coroutine."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from qnet_client import models
from qnet_client._core import Call, new_idempotency_key, segment


def _drop_empty(body: dict) -> dict:
    """Leaves out unset fields, so the server applies its documented defaults."""
    return {k: v for k, v in body.items() if v not in (None, "", 0, False, [], ())}


def _circuit(item: str | Mapping[str, Any]) -> dict:
    if isinstance(item, str):
        return {"qasm": item}
    unknown = set(item) - {"qasm", "shots", "backends", "strategy"}
    if unknown:
        raise ValueError(f"unknown batch circuit fields {sorted(unknown)}; use qasm, shots, backends, strategy")
    return _drop_empty(dict(item))


class Routes:
    """The fifteen REST routes of /api/v2/network (the spec's fourteen and GET /execute/batch/{batch_id})."""

    def _call(self, call: Call) -> Any:  # implemented by each client
        raise NotImplementedError

    # --- execution ----------------------------------------------------------------------------------------

    def execute(self, qasm: str, backends: Iterable[str] = (), strategy: str = "", shots: int = 0, *,
                aggregate: bool = False, aggregation_method: str = "", return_immediately: bool = False,
                idempotency_key: str | None = None) -> models.Job:
        """POST /execute. Waits (server-side, bounded) for the job unless `return_immediately`; every attempt
        carries one Idempotency-Key, so retries make one job. Empty arguments take the server's defaults."""
        body = _drop_empty({"qasm": qasm, "backends": list(backends), "strategy": strategy, "shots": shots,
                            "aggregate": aggregate or bool(aggregation_method),
                            "aggregation_method": aggregation_method, "return_immediately": return_immediately})
        body["qasm"] = qasm
        return self._call(Call("POST", "/execute", models.Job, body, idempotency_key or new_idempotency_key()))

    def execute_batch(self, circuits: Sequence[str | Mapping[str, Any]], backends: Iterable[str] = (),
                      strategy: str = "", shots: int = 0, *, idempotency_key: str | None = None) -> models.Batch:
        """POST /execute/batch: circuits are QASM texts or dicts with qasm, shots, backends, strategy."""
        body = _drop_empty({"backends": list(backends), "strategy": strategy, "shots": shots})
        body["circuits"] = [_circuit(c) for c in circuits]
        return self._call(Call("POST", "/execute/batch", models.Batch, body,
                               idempotency_key or new_idempotency_key()))

    def get_batch(self, batch_id: str) -> models.Batch:
        """GET /execute/batch/{batch_id}."""
        return self._call(Call("GET", f"/execute/batch/{segment(batch_id)}", models.Batch))

    def get_job(self, job_id: str) -> models.Job:
        """GET /execute/{job_id}."""
        return self._call(Call("GET", f"/execute/{segment(job_id)}", models.Job))

    def cancel_job(self, job_id: str) -> models.Job:
        """DELETE /execute/{job_id}. JobAlreadyFinished (409) when the job had ended."""
        return self._call(Call("DELETE", f"/execute/{segment(job_id)}", models.Job))

    # --- backends -----------------------------------------------------------------------------------------

    def backends(self) -> list[models.Backend]:
        """GET /backends."""
        return self._call(Call("GET", "/backends", list[models.Backend]))

    def backend(self, backend_id: str) -> models.Backend:
        """GET /backends/{id}: with the coupling map."""
        return self._call(Call("GET", f"/backends/{segment(backend_id)}", models.Backend))

    def calibration(self, backend_id: str) -> models.Calibration:
        """GET /backends/{id}/calibration."""
        return self._call(Call("GET", f"/backends/{segment(backend_id)}/calibration", models.Calibration))

    def queue(self, backend_id: str) -> models.QueueStatus:
        """GET /backends/{id}/queue."""
        return self._call(Call("GET", f"/backends/{segment(backend_id)}/queue", models.QueueStatus))

    # --- network ------------------------------------------------------------------------------------------

    def status(self) -> models.NetworkStatus:
        """GET /status."""
        return self._call(Call("GET", "/status", models.NetworkStatus))

    def metrics(self) -> models.NetworkMetrics:
        """GET /metrics."""
        return self._call(Call("GET", "/metrics", models.NetworkMetrics))

    def topology(self) -> models.Topology:
        """GET /topology."""
        return self._call(Call("GET", "/topology", models.Topology))

    def estimate(self, qasm: str, shots: int = 0, backends: Iterable[str] = (), strategy: str = "") -> \
            models.CostEstimate:
        """POST /estimate."""
        body = _drop_empty({"shots": shots, "backends": list(backends), "strategy": strategy})
        body["qasm"] = qasm
        return self._call(Call("POST", "/estimate", models.CostEstimate, body))

    # --- aggregation --------------------------------------------------------------------------------------

    def aggregate(self, results: Sequence[Mapping[str, Any]], method: str = "", shots: int = 0, *,
                  mitigate: bool = False, max_divergence: float = 0.0) -> models.AggregationResult:
        """POST /aggregate: results are dicts with backend, counts and optionally shots, fidelity,
        readout_errors."""
        body = _drop_empty({"method": method, "shots": shots, "mitigate": mitigate,
                            "max_divergence": max_divergence})
        body["results"] = [dict(r) for r in results]
        return self._call(Call("POST", "/aggregate", models.AggregationResult, body))

    def aggregation_methods(self) -> list[models.AggregationMethod]:
        """GET /aggregate/methods."""
        return self._call(Call("GET", "/aggregate/methods", list[models.AggregationMethod]))
