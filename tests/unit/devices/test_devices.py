"""Every device on its vendor's SDK: bit order, noise from calibration, compilation figures, documented 400s."""

from __future__ import annotations

import functools
import pathlib

import pytest

from qnet_common import errors
from services.aggregator.domain.aggregation import hellinger_fidelity
from services.backends.adapters.registry import DEVICE_IDS, build_devices
from services.backends.domain.qasm import parse

QASMBENCH = pathlib.Path(__file__).resolve().parents[4] / "shared" / "qasmbench" / "small"
NOISY = ("ionq_aria", "ibm_brisbane", "ibm_torino", "rigetti_aspen")
IDEAL = ("local_simulator", "ionq_simulator")
GHZ5 = """OPENQASM 2.0;
include "qelib1.inc";
qreg q[5];
creg c[5];
h q[0];
cx q[0],q[1];
cx q[1],q[2];
cx q[2],q[3];
cx q[3],q[4];
measure q -> c;
"""


@functools.cache
def device(device_id: str):
    return build_devices([device_id])[device_id]


def run(device_id: str, qasm: str, shots: int, seed: int | None = None):
    """What the backends service does with a circuit: read it once, then run it on the device."""
    return device(device_id).run(parse(qasm), shots, seed)


def assess(device_id: str, qasm: str, shots: int):
    return device(device_id).assess(parse(qasm), shots)


@pytest.mark.parametrize("device_id", DEVICE_IDS)
def test_bit_order_is_openqasms_on_every_device(device_id):
    counts = run(device_id,
        'OPENQASM 2.0; include "qelib1.inc"; qreg q[2]; creg c[2]; x q[0]; measure q -> c;', 400, seed=5
    ).counts
    assert max(counts, key=counts.get) == "01"
    assert counts["01"] >= 300


@pytest.mark.parametrize("device_id", DEVICE_IDS)
def test_several_registers_flatten_in_declaration_order(device_id):
    qasm = """OPENQASM 2.0; include "qelib1.inc";
    qreg a[1]; qreg b[2]; creg m[1]; creg n[2];
    x b[1];
    measure a[0] -> m[0]; measure b[0] -> n[0]; measure b[1] -> n[1];"""
    counts = run(device_id, qasm, 300, seed=3).counts
    assert max(counts, key=counts.get) == "100"  # n[1] is classical bit 2: leftmost


@pytest.mark.parametrize("device_id", IDEAL)
def test_ghz_on_an_ideal_device_matches_the_ideal_distribution(device_id):
    counts = run(device_id, GHZ5, 4000, seed=7).counts
    assert hellinger_fidelity(counts, {"00000": 0.5, "11111": 0.5}) >= 0.97


@pytest.mark.slow
@pytest.mark.parametrize("device_id", NOISY)
def test_ghz_on_a_noisy_device_shows_its_calibrated_noise(device_id):
    result = run(device_id, GHZ5, 4000, seed=7)
    fidelity = hellinger_fidelity(result.counts, {"00000": 0.5, "11111": 0.5})
    assert 0.5 < fidelity < 0.999, fidelity
    assert sum(result.counts.values()) == 4000


@pytest.mark.parametrize("device_id", DEVICE_IDS)
def test_compiled_figures_and_success_probability(device_id):
    assessment = assess(device_id, GHZ5, 1000)
    assert assessment.two_qubit_gates >= 4 and assessment.compiled_depth >= 5
    if device_id in IDEAL:
        assert assessment.estimated_success_probability == 1.0
    else:
        assert 0.0 < assessment.estimated_success_probability < 1.0


def test_routing_on_sparse_lattices_adds_swaps_for_distant_pairs():
    star = 'OPENQASM 2.0; include "qelib1.inc"; qreg q[5]; creg c[5]; h q[0];' + "".join(
        f"cx q[0],q[{i}];" for i in range(1, 5)) + "measure q -> c;"
    rigetti = assess("rigetti_aspen", star, 100)
    ionq = assess("ionq_simulator", star, 100)
    assert ionq.two_qubit_gates == 4  # all-to-all: no routing
    assert rigetti.two_qubit_gates > 4  # degree-2 lattice: a qubit cannot touch four others directly


def test_custom_gates_and_openqasm_3():
    qasm3 = """OPENQASM 3.0;
    include "stdgates.inc";
    gate bell a, b { h a; cx a, b; }
    qubit[2] q;
    bit[2] c;
    bell q[0], q[1];
    c = measure q;
    """
    for device_id in ("local_simulator", "ionq_simulator"):
        counts = run(device_id, qasm3, 1000, seed=1).counts
        assert set(counts) == {"00", "11"}


@pytest.mark.parametrize("device_id", DEVICE_IDS)
def test_one_reading_feeds_every_device_even_where_qiskit_reads_more_strictly(device_id):
    # OpenQASM 2 readers that share one namespace refuse a register named like a gate; qnet reads the text
    # once, so no device can disagree with another about what it says.
    counts = run(device_id, 'OPENQASM 2.0; include "qelib1.inc"; qreg q[1]; creg x[1]; x q[0]; measure q -> x;',
                 50, seed=1).counts
    assert max(counts, key=counts.get) == "1"


def test_a_parse_error_says_where():
    with pytest.raises(errors.InvalidQasm) as raised:
        parse('OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[2];\ncx q[0] q[1];\n')
    assert "line 4, column 9" in raised.value.message and raised.value.http_status == 400


@pytest.mark.parametrize(("qasm", "error"), [
    ('OPENQASM 2.0; include "qelib1.inc"; qreg q[30]; creg c[1]; h q[0]; measure q[0] -> c[0];',
     errors.CircuitTooLarge),
    ('OPENQASM 2.0; include "qelib1.inc"; qreg q[1]; creg c[1]; h q[0]; measure q[0] -> c[0];'
     ' if (c == 1) x q[0];', errors.UnsupportedInstruction),
])
def test_what_a_device_cannot_run_is_a_documented_400(qasm, error):
    with pytest.raises(error) as raised:
        run("ionq_aria", qasm, 10)
    assert raised.value.http_status == 400 and "ionq_aria" in raised.value.message


def test_shots_out_of_range_are_invalid_shots():
    with pytest.raises(errors.InvalidShots):
        run("ionq_aria", GHZ5, 5001)
    with pytest.raises(errors.InvalidShots):
        run("local_simulator", GHZ5, 0)


def test_classical_control_runs_where_supported():
    qasm = """OPENQASM 2.0; include "qelib1.inc"; qreg q[2]; creg c[1]; creg d[1];
    x q[0]; measure q[0] -> c[0]; if (c == 1) x q[1]; measure q[1] -> d[0];"""
    assert run("local_simulator", qasm, 100, seed=2).counts == {"11": 100}


def qasmbench_sample() -> list[pathlib.Path]:
    files = sorted(QASMBENCH.glob("*.qasm"))
    return files[::5] if files else []


@pytest.mark.slow
@pytest.mark.parametrize("path", qasmbench_sample(), ids=lambda p: p.stem)
@pytest.mark.parametrize("device_id", DEVICE_IDS)
def test_qasmbench_circuits_run_or_fail_with_a_documented_400(device_id, path):
    try:
        result = run(device_id, path.read_text(), 64, seed=1)
    except (errors.InvalidQasm, errors.CircuitTooLarge, errors.UnsupportedInstruction) as error:
        assert error.http_status == 400 and len(error.message) > 20
        return
    assert sum(result.counts.values()) == 64 and result.compiled_depth > 0


@pytest.mark.parametrize("device_id,fake", [("ibm_brisbane", "FakeBrisbane"), ("ibm_torino", "FakeTorino")])
def test_ibm_calibration_is_the_snapshots_in_the_units_it_names(device_id, fake):
    """T1 and T2 in microseconds, gate times in nanoseconds: the snapshot's values (T1 about 240 us, an SX about
    60 ns on Brisbane), not 10^6 times them."""
    from qiskit_ibm_runtime import fake_provider

    props = getattr(fake_provider, fake)().properties()
    calibration = device(device_id).spec.calibration
    for qubit in calibration.qubits[:10]:
        assert qubit.t1_us == pytest.approx(props.t1(qubit.qubit) * 1e6)
        assert qubit.t2_us == pytest.approx(props.t2(qubit.qubit) * 1e6)
        assert 1 < qubit.t1_us < 10_000
    sx = next(g for g in calibration.gates if g.gate == "sx")
    assert sx.duration_ns == pytest.approx(props.gate_length("sx", list(sx.qubits)) * 1e9)
    assert 10 < sx.duration_ns < 1_000


def test_rigetti_routes_a_repeated_circuit_once_and_still_checks_each_submission(monkeypatch):
    """Routing is most of rigetti_aspen's compile (1.1 of its 1.4 ms assess on a Bell circuit): a second identical
    text (same device, same calibration) is not routed again, for `assess` or `run`; the shots are still checked
    on every call."""
    from services.backends.adapters import rigetti

    aspen = rigetti.RigettiAspen()
    routed = []
    real_route = rigetti.route
    monkeypatch.setattr(rigetti, "route", lambda *a, **k: routed.append(1) or real_route(*a, **k))
    bell = 'OPENQASM 2.0; include "qelib1.inc"; qreg q[2]; creg c[2]; h q[0]; cx q[0],q[1]; measure q -> c;'
    first = aspen.assess(parse(bell), 1000)
    again = aspen.assess(parse(bell), 1000)
    run = aspen.run(parse(bell), 100, seed=1)
    assert len(routed) == 1
    assert again == first and run.compiled_depth == first.compiled_depth
    assert aspen.assess(parse(bell), 4000).estimated_execution_s > first.estimated_execution_s
    with pytest.raises(errors.InvalidShots):
        aspen.assess(parse(bell), 10**9)


@pytest.mark.parametrize("device_id", ["ionq_simulator", "ionq_aria"])
def test_ionq_builds_braket_s_capabilities_once_not_on_every_run(device_id, monkeypatch):
    """Braket's simulators rebuild their capabilities (a constant, validated by pydantic) on every access, twice
    per run: about 2 of a Bell circuit's 6 ms on braket_sv. The IonQ devices build them once; the runs are
    still Braket's own."""
    from braket.device_schema.simulators import GateModelSimulatorDeviceCapabilities

    built = []
    real_parse = GateModelSimulatorDeviceCapabilities.parse_obj.__func__
    monkeypatch.setattr(GateModelSimulatorDeviceCapabilities, "parse_obj",
                        classmethod(lambda cls, obj: built.append(1) or real_parse(cls, obj)))
    device = build_devices([device_id])[device_id]
    bell = parse('OPENQASM 2.0; include "qelib1.inc"; qreg q[2]; creg c[2]; h q[0]; cx q[0],q[1]; measure q -> c;')
    runs = [device.run(bell, 200, seed=i) for i in range(4)]
    assert len(built) <= 1
    assert all(set(r.counts) <= {"00", "01", "10", "11"} and sum(r.counts.values()) == 200 for r in runs)
    assert all(r.counts.get("00", 0) + r.counts.get("11", 0) > 150 for r in runs)


def test_rigetti_evolves_a_repeated_circuit_once_and_samples_every_run_afresh(monkeypatch):
    """The noisy evolution depends only on the circuit and the calibration: a circuit run again is sampled from
    the distribution its first run computed (3 ms -> 0.03 ms for a Bell circuit); each run draws its own shots."""
    from services.backends.adapters import rigetti

    aspen = rigetti.RigettiAspen()
    evolved = []
    real = aspen._distribution
    monkeypatch.setattr(aspen, "_distribution", lambda *a: evolved.append(1) or real(*a))
    bell = 'OPENQASM 2.0; include "qelib1.inc"; qreg q[2]; creg c[2]; h q[0]; cx q[0],q[1]; measure q -> c;'
    runs = [aspen.run(parse(bell), 4000, seed=seed).counts for seed in (1, 2, 1)]
    assert len(evolved) == 1
    assert runs[0] == runs[2] and runs[0] != runs[1]
    assert all(0.05 < (r.get("01", 0) + r.get("10", 0)) / 4000 < 0.3 for r in runs)  # its calibrated noise
    other = 'OPENQASM 2.0; include "qelib1.inc"; qreg q[2]; creg c[2]; x q[0]; measure q -> c;'
    assert max(aspen.run(parse(other), 1000, seed=3).counts.items(), key=lambda kv: kv[1])[0] == "01"
    assert len(evolved) == 2
