"""`local_simulator`: an ideal, noiseless Qiskit Aer simulator, all-to-all, with classical control."""

from __future__ import annotations

import datetime
import threading
import time
from collections.abc import Iterable

from services.backends.adapters.qiskit_common import counts_of, load
from services.backends.domain.device import Assessment, Calibration, Device, DeviceSpec, PriceModel, RunResult
from services.backends.domain.emulation import checked

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
)


class LocalSimulator(Device):
    spec = SPEC

    def __init__(self) -> None:
        from qiskit_aer import AerSimulator

        self._simulator = AerSimulator(method="automatic")
        self._lock = threading.Lock()

    def _compiled(self, qasm: str, shots: int):  # noqa: ANN202
        from qiskit import transpile

        circuit = checked(qasm, shots, self.spec)
        compiled = transpile(load(qasm, circuit), self._simulator, optimization_level=0)
        return circuit, compiled

    def run(self, qasm: str, shots: int, seed: int | None = None) -> RunResult:
        circuit, compiled = self._compiled(qasm, shots)
        started = time.perf_counter()
        options = {"shots": shots} | ({"seed_simulator": seed} if seed else {})
        raw = self._simulator.run(compiled, **options).result().get_counts() if circuit.num_clbits else {}
        counts = counts_of(raw, circuit.num_clbits) if circuit.num_clbits else {"": shots}
        return RunResult(counts, shots, compiled.depth(), compiled.num_nonlocal_gates(),
                         time.perf_counter() - started)

    def assess(self, qasm: str, shots: int) -> Assessment:
        _, compiled = self._compiled(qasm, shots)
        return Assessment(compiled.depth(), compiled.num_nonlocal_gates(), 0.0, 1.0)


def devices(ids: Iterable[str]) -> dict[str, Device]:
    return {"local_simulator": LocalSimulator()} if "local_simulator" in ids else {}
