"""Device emulation speed, as ratios measured side by side in one run, and per-device QASMBench times.

- ibm_brisbane vs the naive `AerSimulator.from_backend(FakeBrisbane())` on the same compiled Bell circuit;
- rigetti_aspen's evolve-once sampler vs pyQuil's PyQVM shot loop (both noiseless, same distribution check),
  and the calibrated-noise run;
- ionq_simulator vs Braket's LocalSimulator("braket_sv") on the same circuit;
- a table of each device's time on the QASMBench small circuits (or the documented 400 it answers).
Writes bench/results/devices.md.
"""

from __future__ import annotations

import pathlib
import statistics
import sys
import time
import warnings

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "gen")]
warnings.filterwarnings("ignore")

from qnet_common import errors  # noqa: E402
from services.aggregator.domain.aggregation import hellinger_fidelity  # noqa: E402
from services.backends.adapters.registry import DEVICE_IDS, build_devices  # noqa: E402
from services.backends.domain.qasm import parse  # noqa: E402

BELL = 'OPENQASM 2.0; include "qelib1.inc"; qreg q[2]; creg c[2]; h q[0]; cx q[0],q[1]; measure q -> c;'
SHOTS = 1024
QASMBENCH = ROOT.parent / "shared" / "qasmbench" / "small"


def timed(fn, repeat: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def ibm_ratio(devices) -> tuple[str, float, float, float]:
    from qiskit_aer import AerSimulator
    from qiskit_ibm_runtime.fake_provider import FakeBrisbane

    device = devices["ibm_brisbane"]
    device.run(parse(BELL), SHOTS)  # compile once (cached), as a running backend has
    compiled = device._compile(parse(BELL), SHOTS)  # the very circuit the device runs
    backend = FakeBrisbane()

    def naive() -> dict[str, int]:
        return AerSimulator.from_backend(backend).run(compiled, shots=SHOTS).result().get_counts()

    naive_s, naive_counts = timed(naive, 3)
    ours_s, ours = timed(lambda: device.run(parse(BELL), SHOTS), 20)
    return "ibm_brisbane vs AerSimulator.from_backend(FakeBrisbane())", naive_s, ours_s, hellinger_fidelity(
        naive_counts, ours.counts)


def rigetti_ratio() -> tuple[str, float, float, float]:
    from pyquil import Program
    from pyquil.gates import CNOT, MEASURE, H
    from pyquil.pyqvm import PyQVM
    from pyquil.simulation import ReferenceWavefunctionSimulator

    from services.backends.adapters.rigetti import RigettiAspen

    def pyqvm() -> dict[str, int]:
        program = Program()
        ro = program.declare("ro", "BIT", 2)
        program += H(0)
        program += CNOT(0, 1)
        program += MEASURE(0, ro[0])
        program += MEASURE(1, ro[1])
        program.wrap_in_numshots_loop(SHOTS)
        qvm = PyQVM(n_qubits=2, quantum_simulator_type=ReferenceWavefunctionSimulator)
        qvm.execute(program)
        bits = qvm.read_memory(region_name="ro")
        counts: dict[str, int] = {}
        for b0, b1 in bits:
            key = f"{b1}{b0}"
            counts[key] = counts.get(key, 0) + 1
        return counts

    loop_s, loop_counts = timed(pyqvm, 3)
    noiseless = RigettiAspen(noiseless=True)
    ours_s, ours = timed(first_runs(noiseless), 20)
    return "rigetti_aspen sampler vs PyQVM shot loop (noiseless, each run a circuit it has not seen)", loop_s, \
        ours_s, hellinger_fidelity(loop_counts, ours.counts)


def first_runs(device):
    """Runs of the Bell circuit, each text new to the device (a comment apart): rigetti_aspen keeps each
    circuit's compilation and distribution by fingerprint, and a repeated text would time only its sampling."""
    texts = (f"{BELL} // {k}" for k in range(10**6))
    return lambda: device.run(parse(next(texts)), SHOTS)


def ionq_ratio(devices) -> tuple[str, float, float, float]:
    from braket.circuits import Circuit
    from braket.devices import LocalSimulator

    simulator = LocalSimulator("braket_sv")
    circuit = Circuit().h(0).cnot(0, 1)

    def braket() -> dict[str, int]:
        return dict(simulator.run(circuit, shots=SHOTS).result().measurement_counts)

    braket_s, braket_counts = timed(braket, 20)
    ours_s, ours = timed(lambda: devices["ionq_simulator"].run(parse(BELL), SHOTS), 20)
    return "ionq_simulator vs Braket LocalSimulator('braket_sv')", braket_s, ours_s, hellinger_fidelity(
        braket_counts, ours.counts)


def qasmbench_table(devices) -> list[str]:
    rows = ["| circuit | " + " | ".join(DEVICE_IDS) + " |", "|---|" + "---|" * len(DEVICE_IDS)]
    for path in sorted(QASMBENCH.glob("*.qasm")):
        cells = []
        for device_id in DEVICE_IDS:
            started = time.perf_counter()
            try:
                devices[device_id].run(parse(path.read_text()), 256, seed=1)
                cells.append(f"{1000 * (time.perf_counter() - started):.0f} ms")
            except errors.QnetError as error:
                cells.append(error.code)
        rows.append(f"| {path.stem} | " + " | ".join(cells) + " |")
    return rows


def main() -> None:
    devices = build_devices(DEVICE_IDS)
    ratios = [ibm_ratio(devices), rigetti_ratio(), ionq_ratio(devices)]
    lines = [
        "# Device emulation speed", "",
        f"Bell circuit, {SHOTS} shots, medians, measured side by side in one run on this machine.", "",
        "| comparison | reference | qnet | speed-up | Hellinger fidelity between the two |", "|---|---|---|---|---|",
    ]
    for name, reference, ours, fidelity in ratios:
        lines.append(f"| {name} | {1000 * reference:.1f} ms | {1000 * ours:.2f} ms | {reference / ours:.1f}x |"
                     f" {fidelity:.4f} |")
    noisy_s, _ = timed(first_runs(devices["rigetti_aspen"]), 20)
    again_s, _ = timed(lambda: devices["rigetti_aspen"].run(parse(BELL), SHOTS), 20)
    lines += ["", f"rigetti_aspen with its calibrated noise (density matrix, relaxation, readout): "
              f"{1000 * noisy_s:.2f} ms per Bell run of a circuit it has not seen, {1000 * again_s:.3f} ms for one"
              " it has (sampled again from the distribution it kept).", "",
              "## QASMBench small circuits, 256 shots (first run, compilation included)", "",
              "An error code is the documented 400 the device answers (README, Errors).", ""]
    lines += qasmbench_table(devices)
    text = "\n".join(lines) + "\n"
    (ROOT / "bench" / "results" / "devices.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
