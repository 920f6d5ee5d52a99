"""What a quantum device is to qnet: fixed capabilities, calibration, price, and a way to run a circuit.

Pure Python: no SDK and no grpc here. Each vendor SDK lives in its own module under `adapters/`, which
implements `Device.run`.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from datetime import datetime

from services.backends.domain.circuit import Circuit

DEVICE_STATUSES = ("online", "offline", "maintenance")


@dataclass(frozen=True)
class QubitCalibration:
    """One qubit's coherence and readout figures."""

    qubit: int
    t1_us: float
    t2_us: float
    readout_error: float
    #: P(read 1 | prepared 0) and P(read 0 | prepared 1); both default to readout_error when not published.
    prob_meas1_prep0: float | None = None
    prob_meas0_prep1: float | None = None


@dataclass(frozen=True)
class GateCalibration:
    """One native gate on specific qubits (empty tuple: the same figure for every qubit or pair)."""

    gate: str
    qubits: tuple[int, ...]
    error: float
    duration_ns: float


@dataclass(frozen=True)
class Calibration:
    taken_at: datetime
    qubits: tuple[QubitCalibration, ...]
    gates: tuple[GateCalibration, ...]
    #: Where the figures come from (a snapshot name or a published datasheet).
    source: str


@dataclass(frozen=True)
class PriceModel:
    """A provider's published price: per task plus per shot, or per second of run time."""

    per_task: float
    per_shot: float
    per_second: float = 0.0
    currency: str = "USD"
    source: str = ""

    def cost(self, shots: int, estimated_seconds: float) -> float:
        return self.per_task + self.per_shot * shots + self.per_second * estimated_seconds


@dataclass(frozen=True)
class DeviceSpec:
    """The fixed capabilities of a device."""

    id: str
    name: str
    provider: str
    technology: str
    num_qubits: int
    #: Directed or undirected pairs; None means all-to-all connectivity.
    coupling_map: tuple[tuple[int, int], ...] | None
    native_gates: tuple[str, ...]
    max_shots: int
    simulator: bool
    noisy: bool
    supports_classical_control: bool
    calibration: Calibration
    price: PriceModel
    description: str = ""
    #: all_to_all, heavy_hex, octagonal or square.
    connectivity: str = "all_to_all"
    #: What the emulation simulates in bounded time and memory: qubits a circuit acts on, and the work of one
    #: run in amplitude updates (operations x 2^active qubits, x shots where the method samples shot by shot).
    #: Larger circuits are refused up front with CIRCUIT_TOO_LARGE.
    max_active_qubits: int = 0
    max_work: float = 0.0
    emulation: str = ""
    #: Tasks the device runs at once. A QPU runs one circuit at a time, so every hardware emulation runs one
    #: (the others wait in its queue, as on the real machine); an ideal simulator running on the cluster itself
    #: may run several (Aer simulates outside Python's lock).
    concurrent_tasks: int = 1


@dataclass(frozen=True)
class RunResult:
    """Counts keyed by bitstring in OpenQASM order (classical bit 0 rightmost), plus compilation figures."""

    counts: dict[str, int]
    shots: int
    compiled_depth: int
    two_qubit_gates: int
    execution_time_s: float
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Assessment:
    """A circuit compiled for a device but not run: what it would cost in time and fidelity."""

    compiled_depth: int
    two_qubit_gates: int
    #: Estimated seconds of device time for all shots (used by per-second prices).
    estimated_execution_s: float
    #: Product of the compiled circuit's gate fidelities and its measured qubits' readout fidelities,
    #: from the current calibration (1.0 on an ideal simulator).
    estimated_success_probability: float


class Device(abc.ABC):
    """A runnable device. `run` is blocking and CPU bound: callers run it off the event loop.

    Devices take the circuit as read once by the front door (`domain.qasm.parse`); none reads text again.
    """

    spec: DeviceSpec

    @abc.abstractmethod
    def run(self, circuit: Circuit, shots: int, seed: int | None = None) -> RunResult:
        """Validate, compile to the device and execute.

        Raises qnet_common.errors.CircuitTooLarge, InvalidShots or UnsupportedInstruction for a circuit the
        device cannot take.
        """

    @abc.abstractmethod
    def assess(self, circuit: Circuit, shots: int) -> Assessment:
        """Validate and compile without executing (same errors as `run`).

        Used by the scheduler's best_fidelity and cost_optimized strategies and by POST /estimate.
        """
