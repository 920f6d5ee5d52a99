"""A thin gRPC client for callers inside the mesh: the same calls as the REST client, on the services' own ports.

It uses the stubs generated from protos/ (`make protos` writes them to gen/qnet; put gen/ on PYTHONPATH): they
are not shipped in this package, so it is for callers that build from the repository. Results are the protos'
messages (the `data` of each response); errors are the same exceptions as the REST client's, read from the
google.rpc.ErrorInfo every qnet error carries.

    with GrpcClient(api_key=KEY) as client:      # QNET_SCHEDULER_ADDR, QNET_NETWORK_ADDR, QNET_AGGREGATOR_ADDR
        job = client.execute(qasm=BELL, backends=["ionq_simulator"], shots=100)
"""

from __future__ import annotations

import pathlib
import sys
from typing import Any

from qnet_client._core import from_environment, new_idempotency_key
from qnet_client.errors import QnetError, error_for

#: Environment variable and default address of each service (the mesh's fixed ports, as `make run` binds them).
ADDRESSES = {"scheduler": ("QNET_SCHEDULER_ADDR", "127.0.0.1:50051"),
             "network": ("QNET_NETWORK_ADDR", "127.0.0.1:50054"),
             "aggregator": ("QNET_AGGREGATOR_ADDR", "127.0.0.1:50053")}
_HTTP_OF_GRPC = {"INVALID_ARGUMENT": 400, "UNAUTHENTICATED": 401, "PERMISSION_DENIED": 403, "NOT_FOUND": 404,
                 "ABORTED": 409, "RESOURCE_EXHAUSTED": 429, "UNAVAILABLE": 503, "DEADLINE_EXCEEDED": 504}


def ensure_stubs() -> None:
    """Makes the generated stubs importable: already on the path, or in the repository's gen/ beside this
    package (an editable install from a checkout, as `make setup` does); else an ImportError that says why."""
    try:
        import qnet.scheduler.v1  # noqa: F401
        return
    except ImportError:
        pass
    gen = pathlib.Path(__file__).resolve().parents[1] / "gen"
    if (gen / "qnet").is_dir() and str(gen) not in sys.path:
        sys.path.append(str(gen))


def _stubs():
    ensure_stubs()
    try:
        from qnet.aggregator.v1 import aggregation_service_pb2 as ag
        from qnet.aggregator.v1 import aggregation_service_pb2_grpc as ag_grpc
        from qnet.backends.v1 import backend_service_pb2 as bs
        from qnet.backends.v1 import backend_service_pb2_grpc as bs_grpc
        from qnet.network.v1 import network_service_pb2 as ns
        from qnet.network.v1 import network_service_pb2_grpc as ns_grpc
        from qnet.scheduler.v1 import execution_service_pb2 as ex
        from qnet.scheduler.v1 import execution_service_pb2_grpc as ex_grpc
    except ImportError as error:
        raise ImportError("qnet's generated gRPC stubs are missing: run `make protos` in the repository and put "
                          "its gen/ directory on PYTHONPATH") from error
    return ag, ag_grpc, bs, bs_grpc, ns, ns_grpc, ex, ex_grpc


def error_of(error: Any) -> QnetError:  # a grpc.RpcError
    """The documented error a gRPC failure carries (its ErrorInfo reason), else one named by its gRPC code."""
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    status = rpc_status.from_call(error)
    grpc_code = error.code().name
    http = _HTTP_OF_GRPC.get(grpc_code, 500)
    if status is not None:
        for detail in status.details:
            info = error_details_pb2.ErrorInfo()
            if detail.Unpack(info) and info.reason:
                return error_for(info.reason, http, status.message)
    code = "UNAVAILABLE" if grpc_code in ("UNAVAILABLE", "DEADLINE_EXCEEDED") else grpc_code
    return error_for(code, http, error.details() or grpc_code)


class GrpcClient:
    def __init__(self, api_key: str | None = None, *, addresses: dict[str, str] | None = None,
                 timeout: float = 90.0) -> None:
        import grpc

        self._grpc = grpc
        self._pb = _stubs()
        ag, ag_grpc, bs, bs_grpc, ns, ns_grpc, ex, ex_grpc = self._pb
        self.api_key = api_key or from_environment("QNET_API_KEY", "QCOS_API_KEY")
        self.timeout = timeout
        given = addresses or {}
        self.addresses = {name: given.get(name) or from_environment(var) or default
                          for name, (var, default) in ADDRESSES.items()}
        self._channels = {name: grpc.insecure_channel(address) for name, address in self.addresses.items()}
        self.execution = ex_grpc.ExecutionServiceStub(self._channels["scheduler"])
        self.backend_service = bs_grpc.BackendServiceStub(self._channels["network"])
        self.network = ns_grpc.NetworkServiceStub(self._channels["network"])
        self.aggregation = ag_grpc.AggregationServiceStub(self._channels["aggregator"])

    def __enter__(self) -> GrpcClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()

    def _call(self, method: Any, request: Any, idempotency_key: str = "") -> Any:
        metadata = [("authorization", f"Bearer {self.api_key}")]
        if idempotency_key:
            metadata.append(("idempotency-key", idempotency_key))
        try:
            return method(request, metadata=metadata, timeout=self.timeout).data
        except self._grpc.RpcError as error:
            raise error_of(error) from error

    # --- the public RPCs ----------------------------------------------------------------------------------

    def execute(self, *, idempotency_key: str | None = None, **fields: Any) -> Any:
        """ExecutionService.Execute; `fields` are ExecuteRequest's (qasm, backends, strategy, shots, ...)."""
        ex = self._pb[6]
        return self._call(self.execution.Execute, ex.ExecuteRequest(**fields),
                          idempotency_key or new_idempotency_key())

    def execute_batch(self, circuits: list[dict], *, idempotency_key: str | None = None, **fields: Any) -> Any:
        ex = self._pb[6]
        request = ex.ExecuteBatchRequest(circuits=[ex.BatchCircuit(**c) for c in circuits], **fields)
        return self._call(self.execution.ExecuteBatch, request, idempotency_key or new_idempotency_key())

    def get_batch(self, batch_id: str) -> Any:
        return self._call(self.execution.GetBatch, self._pb[6].GetBatchRequest(batch_id=batch_id))

    def get_job(self, job_id: str) -> Any:
        return self._call(self.execution.GetJob, self._pb[6].GetJobRequest(job_id=job_id))

    def cancel_job(self, job_id: str) -> Any:
        return self._call(self.execution.CancelJob, self._pb[6].CancelJobRequest(job_id=job_id))

    def backends(self) -> Any:
        return self._call(self.backend_service.ListBackends, self._pb[2].ListBackendsRequest())

    def backend(self, backend_id: str) -> Any:
        return self._call(self.backend_service.GetBackend, self._pb[2].GetBackendRequest(id=backend_id))

    def calibration(self, backend_id: str) -> Any:
        return self._call(self.backend_service.GetCalibration, self._pb[2].GetCalibrationRequest(id=backend_id))

    def queue(self, backend_id: str) -> Any:
        return self._call(self.backend_service.GetQueue, self._pb[2].GetQueueRequest(id=backend_id))

    def status(self) -> Any:
        return self._call(self.network.GetStatus, self._pb[4].GetStatusRequest())

    def metrics(self) -> Any:
        return self._call(self.network.GetMetrics, self._pb[4].GetMetricsRequest())

    def topology(self) -> Any:
        return self._call(self.network.GetTopology, self._pb[4].GetTopologyRequest())

    def estimate(self, **fields: Any) -> Any:
        return self._call(self.network.EstimateCost, self._pb[4].EstimateCostRequest(**fields))

    def aggregate(self, results: list[dict], **fields: Any) -> Any:
        ag = self._pb[0]
        return self._call(self.aggregation.Aggregate,
                          ag.AggregateRequest(results=[ag.BackendResult(**r) for r in results], **fields))

    def aggregation_methods(self) -> Any:
        return self._call(self.aggregation.ListMethods, self._pb[0].ListMethodsRequest())
