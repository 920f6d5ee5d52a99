"""QASMBench small and medium on the ideal simulators: every circuit runs with the exact distribution, or gets
the one documented 400 that the README's table lists for it (the table is read from the README, so the
documentation and the behaviour cannot drift apart)."""

from __future__ import annotations

import functools
import pathlib
import re

import numpy as np
import pytest
from qiskit import QuantumCircuit, qasm2, transpile
from qiskit_aer import AerSimulator
from scipy import stats

from qnet_common import errors
from services.backends.adapters.registry import build_devices
from services.backends.domain.qasm import parse

ROOT = pathlib.Path(__file__).resolve().parents[3]
QASMBENCH = ROOT.parent / "shared" / "qasmbench"
IDEAL = ("local_simulator", "ionq_simulator")
SHOTS = 4000
#: A fixed seed makes the verdict reproducible; the threshold makes a false alarm practically impossible
#: while a wrong gate (a distribution off by a few percent) fails by many orders of magnitude.
P_VALUE = 1e-6
#: A circuit on more qubits than this gets its exact distribution from Aer's matrix-product-state method (exact
#: here: no truncation is set), in a fraction of a second where the statevector takes 20 s for ising_n26; with
#: more classical bits than this measured, the test compares the distribution of the lowest MARGINAL_CLBITS of
#: them (2^26 outcomes cannot be tested with 4000 shots; 256 can). ising_n26's distribution is uniform: what its
#: run shows is that 26 qubits run, sample uniformly and give no forbidden outcome.
WIDE = 20
MARGINAL_CLBITS = 8


def circuits() -> list[pathlib.Path]:
    return sorted(QASMBENCH.glob("small/*.qasm")) + sorted(QASMBENCH.glob("medium/*.qasm"))


@functools.cache
def documented_refusals() -> dict[tuple[str, str], str]:
    """(circuit, device) -> code, from the README table between the qasmbench-refusals markers."""
    readme = (ROOT / "README.md").read_text()
    table = readme.split("<!-- qasmbench-refusals -->")[1]
    refusals = {}
    for name, devices, code in re.findall(r"^\| `(\w+)` \| ([^|]+) \| `(\w+)` \|", table, re.M):
        for device_id in re.findall(r"`(\w+)`", devices):
            refusals[(name, device_id)] = code
    return refusals


@functools.cache
def device(device_id: str):
    return build_devices([device_id])[device_id]


def test_the_qasmbench_files_are_there():
    # CI has ../shared/qasmbench: without it the parametrised tests below would silently vanish.
    assert len(list(QASMBENCH.glob("small/*.qasm"))) >= 40 and len(list(QASMBENCH.glob("medium/*.qasm"))) >= 20


def test_every_documented_refusal_names_a_real_circuit_and_device():
    names = {p.stem for p in circuits()}
    assert documented_refusals(), "the README's QASMBench table is missing"
    for name, device_id in documented_refusals():
        assert name in names and device_id in IDEAL, (name, device_id)


def _reference(text: str) -> tuple[QuantumCircuit, dict[int, int], bool]:
    """Qiskit's own reading: the circuit without its final measurements, clbit -> qubit, and whether every
    measurement is terminal (no gate, reset or condition after one)."""
    circuit = qasm2.loads(text, custom_instructions=qasm2.LEGACY_CUSTOM_INSTRUCTIONS)
    body = QuantumCircuit(circuit.num_qubits, circuit.num_clbits)
    measured: dict[int, int] = {}
    terminal = True
    for inst in circuit.data:
        qubits = [circuit.find_bit(q).index for q in inst.qubits]
        name = inst.operation.name
        if name == "measure":
            measured[circuit.find_bit(inst.clbits[0]).index] = qubits[0]
        elif name == "barrier":
            continue
        else:
            if set(qubits) & set(measured.values()) or name in ("reset", "if_else") or inst.clbits:
                terminal = False
            body.append(inst.operation, qubits, [circuit.find_bit(c).index for c in inst.clbits])
    return (circuit if not terminal else body), measured, terminal


def _exact(body: QuantumCircuit, measured: dict[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The exact distribution over the classical bits: (outcome values, probabilities), outcomes as integers
    with classical bit 0 least significant."""
    qubits = sorted(set(measured.values()))
    simulator = AerSimulator(method="matrix_product_state" if body.num_qubits > WIDE else "statevector")
    body = transpile(body, simulator, optimization_level=0)  # Qiskit's reading keeps custom gates as such
    body.save_probabilities(qubits)
    probabilities = np.asarray(simulator.run(body).result().data()["probabilities"])
    states = np.nonzero(probabilities > 1e-12)[0].astype(np.int64)
    position = {q: i for i, q in enumerate(qubits)}  # qubits[0] is the least significant bit
    values = np.zeros_like(states)
    for clbit, qubit in measured.items():
        values |= ((states >> position[qubit]) & 1) << clbit
    outcomes, inverse = np.unique(values, return_inverse=True)
    return outcomes, np.bincount(inverse, weights=probabilities[states])


def _marginal(counts: dict[str, int], measured: dict[int, int], kept: list[int]
              ) -> tuple[dict[str, int], dict[int, int]]:
    """The counts of the classical bits `kept` alone, renumbered from 0 in their order, and their qubits."""
    marginal: dict[str, int] = {}
    for key, n in counts.items():
        bits = "".join(key[len(key) - 1 - clbit] for clbit in reversed(kept))
        marginal[bits] = marginal.get(bits, 0) + n
    return marginal, {i: measured[clbit] for i, clbit in enumerate(kept)}


def _goodness_of_fit(counts: dict[str, int], outcomes: np.ndarray, exact: np.ndarray) -> float:
    """Chi-square p-value of the counts against the exact distribution (outcomes expected fewer than 5 times
    pooled into one bin, and any outcome the exact distribution forbids fails outright)."""
    seen = np.array([int(k, 2) for k in counts], dtype=np.int64)
    numbers = np.array(list(counts.values()), dtype=float)
    forbidden = seen[~np.isin(seen, outcomes)]
    assert forbidden.size == 0, f"outcomes with probability 0 observed: {forbidden[:5]}"
    shots = numbers.sum()
    expected = exact / exact.sum() * shots
    big = expected >= 5
    observed_by_outcome = dict(zip(seen.tolist(), numbers.tolist(), strict=True))
    observed = [observed_by_outcome.get(v, 0.0) for v in outcomes[big].tolist()]
    expected_bins = list(expected[big])
    if (~big).any():
        observed.append(shots - sum(observed))
        expected_bins.append(shots - sum(expected_bins))
    if len(observed) < 2:
        return 1.0
    return float(stats.chisquare(observed, expected_bins).pvalue)


@pytest.mark.slow
@pytest.mark.parametrize("path", circuits(), ids=lambda p: f"{p.parent.name}/{p.stem}")
@pytest.mark.parametrize("device_id", IDEAL)
def test_qasmbench_runs_with_the_exact_distribution_or_its_documented_400(device_id, path):
    text = path.read_text()
    refusal = documented_refusals().get((path.stem, device_id))
    try:
        circuit = parse(text)
        result = device(device_id).run(circuit, SHOTS, seed=11)
    except errors.QnetError as error:
        assert refusal == error.code, f"{path.stem} on {device_id}: {error.code}: {error.message}"
        assert error.http_status == 400
        return
    assert refusal is None, f"{path.stem} on {device_id} ran, but the README says it answers {refusal}"
    assert sum(result.counts.values()) == SHOTS
    reference, measured, terminal = _reference(text)
    if terminal:
        counts = result.counts
        if len(measured) > WIDE:
            counts, measured = _marginal(counts, measured, sorted(measured)[:MARGINAL_CLBITS])
        p_value = _goodness_of_fit(counts, *_exact(reference, measured))
    else:  # mid-circuit measurement: compare with Aer running Qiskit's own reading (two-sample test)
        simulator = AerSimulator()
        reference = transpile(reference, simulator, optimization_level=0)
        raw = simulator.run(reference, shots=SHOTS, seed_simulator=5).result().get_counts()
        theirs = {k.replace(" ", ""): v for k, v in raw.items()}
        keys = sorted(set(theirs) | set(result.counts))
        table = np.array([[result.counts.get(k, 0) for k in keys], [theirs.get(k, 0) for k in keys]])
        common = table[:, table.sum(axis=0) >= 10]
        if common.shape[1] < 2:  # one dominant outcome: both readings must give exactly the same outcomes
            assert set(result.counts) == set(theirs), (path.stem, result.counts, theirs)
            return
        p_value = float(stats.chi2_contingency(common).pvalue)
    assert p_value > P_VALUE, f"{path.stem} on {device_id}: p = {p_value:.3g}"
