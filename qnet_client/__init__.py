"""qnet's Python client: `Client` (sync), `AsyncClient` (asyncio), typed results and one exception per documented
error code. `qnet_client.cli` is the `qnet` command; `qnet_client.qiskit_provider` the Qiskit provider (extra
`qiskit`); `qnet_client.grpc_client` the gRPC client for callers inside the mesh (needs the generated stubs)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from qnet_client import errors, models
from qnet_client._core import Config, RetryPolicy
from qnet_client.client import Client
from qnet_client.errors import ConnectionFailed, QnetError, WaitTimeout
from qnet_client.models import Backend, Batch, Calibration, Event, Job, NetworkStatus

if TYPE_CHECKING:
    from qnet_client.aio import AsyncClient

__all__ = ["AsyncClient", "Backend", "Batch", "Calibration", "Client", "Config", "ConnectionFailed", "Event", "Job",
           "NetworkStatus", "QnetError", "RetryPolicy", "WaitTimeout", "errors", "models"]


def __getattr__(name: str):  # the asyncio client needs httpx (extra "client"): loaded on use
    if name == "AsyncClient":
        from qnet_client.aio import AsyncClient

        return AsyncClient
    raise AttributeError(name)
