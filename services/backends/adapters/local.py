"""`local_simulator`: an ideal, noiseless Qiskit Aer simulator, all-to-all, with classical control."""

from __future__ import annotations

import datetime
import time
from collections.abc import Iterable

from qnet_common.cache import BytesLRU
from services.backends.adapters.qiskit_common import counts_of, to_qiskit
from services.backends.domain.circuit import Circuit
from services.backends.domain.device import Assessment, Calibration, Device, DeviceSpec, PriceModel, RunResult
from services.backends.domain.emulation import checked

#: Aer's statevector over 26 qubits is 1 GiB; the work bound (2.5e10 updates: ising_n26, about 10 s on two
#: cores) keeps a run to seconds.
MAX_ACTIVE_QUBITS = 26
#: Aer's statevector_parallel_threshold: from this many qubits it spreads each state update over threads.
PARALLEL_QUBITS = 14
MAX_WORK = 2.5e10
#: Circuits built for Aer, kept by fingerprint (a circuit run again is not built again), bounded in bytes.
PROGRAM_CACHE_BYTES = 16 << 20

SPEC = DeviceSpec(
    id="local_simulator",
    name="Local Aer simulator (ideal)",
    provider="local",
    technology="simulator",
    num_qubits=30,
    coupling_map=None,
    native_gates=("u", "cx", "measure", "reset", "if_else"),
    max_shots=100_000,
    simulator=True,
    noisy=False,
    supports_classical_control=True,
    calibration=Calibration(datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC), (), (), "ideal: no noise"),
    price=PriceModel(0.0, 0.0, source="runs on the qnet cluster itself: no provider charge"),
    description="Qiskit Aer statevector simulation, no noise; supports mid-circuit measurement and if",
    connectivity="all_to_all",
    max_active_qubits=MAX_ACTIVE_QUBITS,
    max_work=MAX_WORK,
    emulation="Aer statevector",
    # One task at a time, as on every device, though nothing but this process's CPU bounds an ideal simulator:
    # Aer 0.18 holds Python's lock while it simulates and runs one job at a time per process (its jobs'
    # executor has one thread), so a second task "running" beside the first only waited inside Aer, and the
    # queue reported it running and estimated waits for two. More at once means more adapter processes.
    concurrent_tasks=1,
)


class LocalSimulator(Device):
    spec = SPEC

    def __init__(self) -> None:
        from qiskit_aer import AerSimulator

        self._simulator = AerSimulator(method="statevector")
        # Below Aer's own threshold for parallel state updates a run gains nothing from more threads, and
        # OpenMP's idle threads spin: one thread does the same run in the same time for half the CPU, which the
        # process's other work then gets.
        self._serial = AerSimulator(method="statevector", max_parallel_threads=1)
        self._programs: BytesLRU = BytesLRU(PROGRAM_CACHE_BYTES, lambda qc: 2_000 + 1_000 * len(qc.data))

    def _checked(self, circuit: Circuit, shots: int) -> Circuit:
        # Mid-circuit measurement, reset and `if` make Aer simulate shot by shot.
        sampled = circuit.measurements_are_terminal and not circuit.has_reset
        return checked(circuit, shots, self.spec, shot_by_shot=not sampled)

    def run(self, circuit: Circuit, shots: int, seed: int | None = None) -> RunResult:
        self._checked(circuit, shots)
        program = self._program(circuit)
        started = time.perf_counter()
        options = {"shots": shots} | ({"seed_simulator": seed} if seed else {})
        simulator = self._serial if circuit.num_qubits < PARALLEL_QUBITS else self._simulator
        raw = simulator.run(program, **options).result().get_counts() if circuit.num_clbits else {}
        counts = counts_of(raw, circuit.num_clbits) if circuit.num_clbits else {"": shots}
        return RunResult(counts, shots, program.depth(), program.num_nonlocal_gates(),
                         time.perf_counter() - started)

    def _program(self, circuit: Circuit):  # a qiskit QuantumCircuit, which Aer's run only reads
        """The circuit built for Aer: every intrinsic gate is one Aer runs natively, so nothing to transpile."""
        key = circuit.fingerprint or None
        found = self._programs.get(key) if key else None
        if found is None:
            found = to_qiskit(circuit)
            if key:
                self._programs.put(key, found)
        return found

    def assess(self, circuit: Circuit, shots: int) -> Assessment:
        self._checked(circuit, shots)
        return Assessment(circuit.depth(), circuit.two_qubit_gates, 0.0, 1.0)


def devices(ids: Iterable[str]) -> dict[str, Device]:
    return {"local_simulator": LocalSimulator()} if "local_simulator" in ids else {}
