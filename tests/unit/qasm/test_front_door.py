"""The circuit front door as a user meets it: what OpenQASM means, what is refused and how, and what the
devices and caches promise about size."""

from __future__ import annotations

import asyncio
import concurrent.futures
import re

import pytest

from qnet_common import errors
from qnet_common.cache import BytesLRU
from services.backends.adapters.registry import build_devices
from services.backends.domain.fleet import Fleet
from services.backends.domain.qasm import limits, parse

Q2 = 'OPENQASM 2.0;\ninclude "qelib1.inc";\n'
Q3 = 'OPENQASM 3.0;\ninclude "stdgates.inc";\n'


def refusal(text: str) -> errors.QnetError:
    with pytest.raises(errors.QnetError) as raised:
        parse(text)
    assert raised.value.http_status == 400, raised.value
    return raised.value


def where(error: errors.QnetError) -> tuple[int, int]:
    match = re.search(r"line (\d+), column (\d+)", error.message)
    assert match, error.message
    return int(match.group(1)), int(match.group(2))


# --- nothing reaches the filesystem ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["/etc/passwd", "/proc/self/environ", "../../README.md", "pyproject.toml",
                                  "/no/such/file.inc", "qelib1.inc/../../etc/passwd"])
def test_an_include_other_than_the_standard_headers_is_refused_alike_whether_or_not_the_file_exists(name):
    error = refusal(f'OPENQASM 2.0;\ninclude "{name}";\nqreg q[1];\n')
    assert error.code == "INVALID_QASM" and where(error) == (2, 1)
    assert error.message.replace(name, "NAME") == refusal(
        'OPENQASM 2.0;\ninclude "/does/not/exist";\nqreg q[1];\n').message.replace("/does/not/exist", "NAME")
    assert "root:" not in error.message


def test_the_standard_headers_are_served_from_qnets_own_copies():
    for text in (Q2 + "qreg q[4]; c3sqrtx q[0],q[1],q[2],q[3]; rccx q[0],q[1],q[2]; csx q[0],q[1];",
                 Q3 + "qubit[2] q; cu(0.1, 0.2, 0.3, 0.4) q[0], q[1]; cphase(0.5) q[0], q[1];"):
        assert parse(text).ops


# --- refusals: documented code, line and column, before anything is allocated -----------------------------


@pytest.mark.parametrize(("body", "code"), [
    ("qreg q[100000000];\nh q;", "CIRCUIT_TOO_LARGE"),
    ("qreg q[2.5];", "INVALID_QASM"),
    ("qreg q[0];", "INVALID_QASM"),
    ("qreg q[2];\nh q[1.5];", "INVALID_QASM"),
    ("qreg q[2];\nh q[2];", "INVALID_QASM"),
    ("qreg q[2];\nbarrier", "INVALID_QASM"),
    ("qreg q[1];\nrx(" + "(" * 2000 + "1" + ")" * 2000 + ") q[0];", "CIRCUIT_TOO_LARGE"),
    ("qreg q[1];\nrx(10^400) q[0];", "INVALID_QASM"),
    ("qreg q[1];\nrx(0^-1) q[0];", "INVALID_QASM"),
    ("qreg q[1];\nrx((-1)^0.5) q[0];", "INVALID_QASM"),
    ("qreg q[1];\nrx(exp(1000)) q[0];", "INVALID_QASM"),
    ("qreg q[1];\nrx(1e999) q[0];", "INVALID_QASM"),
    ("qreg q[1];\nrx(1/0) q[0];", "INVALID_QASM"),
    ("qreg q[1];\nrx(int(1e300)) q[0];", "INVALID_QASM"),
    ("qreg q[2];\ngate g a { cx a, a; }", "INVALID_QASM"),
    ("qreg q[2];\ncx q[0], q[0];", "INVALID_QASM"),
    ("qreg q[1];\nopaque magic a;", "UNSUPPORTED_INSTRUCTION"),
    ("qreg q[1];\nfoo q[0];", "INVALID_QASM"),
    ("qreg q[1];\nh q[0];\x00", "INVALID_QASM"),
])
def test_hostile_or_malformed_openqasm_2_is_a_documented_400_with_a_place(body, code):
    error = refusal(Q2 + body)
    assert error.code == code, error.message
    line, _ = where(error)
    assert line >= 3


def test_chained_operators_cannot_exhaust_the_stack():
    for expression in ("+".join(["x"] * 3000), "-" * 3000 + "x", "x" + "^x" * 3000):
        text = Q2 + f"qreg q[1];\ngate g(x) a {{ rx({expression}) a; }}\ng(0.1) q[0];"
        assert refusal(text).code == "CIRCUIT_TOO_LARGE"


@pytest.mark.parametrize("levels", [16, 30, 60])
def test_definitions_that_double_are_refused_from_their_size_before_expanding(levels):
    text = Q2 + "qreg q[4];\ngate g0 a { h a; }\n" + "".join(
        f"gate g{k} a {{ g{k - 1} a; g{k - 1} a; }}\n" for k in range(1, levels + 1)) + f"g{levels} q;"
    error = refusal(text)
    assert error.code == "CIRCUIT_TOO_LARGE" and str(limits.MAX_OPERATIONS) in error.message
    assert where(error)[0] == levels + 5  # the call, after the header, the register and the definitions


def test_definitions_nested_past_the_depth_limit_are_refused_where_defined():
    text = Q2 + "qreg q[1];\ngate g0 a { h a; }\n" + "".join(
        f"gate g{k} a {{ g{k - 1} a; }}\n" for k in range(1, limits.MAX_GATE_DEPTH + 2))
    assert refusal(text).code == "CIRCUIT_TOO_LARGE"


@pytest.mark.parametrize("body", [
    "qubit q;\nfor int i in [0:1000000000] { x q; }",
    "qubit q;\n" + "".join(f"for int i{k} in [0:9] {{ " for k in range(8)) + "x q;" + " }" * 8,
    "qubit q;\ngate g a { x a; }\npow(1000000000) @ g q;",
    "qubit[17] q;\nctrl(16) @ x q[0], q[1], q[2], q[3], q[4], q[5], q[6], q[7], q[8], q[9], q[10], q[11], q[12],"
    " q[13], q[14], q[15], q[16];",
    "qubit q;\ngate g0 { gphase(0.1); }\n" + "".join(f"gate g{k} {{ g{k - 1}; g{k - 1}; }}\n" for k in range(1, 40))
    + "g39;",
    "qubit q;\nfor int i in [0:99999] { pow(0.5) @ h q; }\nfor int i in [0:99999] { pow(0.5) @ h q; }",
])
def test_loops_powers_and_controls_are_bounded(body):
    assert refusal(Q3 + body).code == "CIRCUIT_TOO_LARGE"


@pytest.mark.parametrize(("body", "what"), [
    ("qubit q;\nint x = 3;", "classical variables"),
    ("qubit q;\nwhile (true) { x q; }", "while"),
    ("qubit q;\ndef f(qubit a) { x a; }", "subroutines"),
    ("qubit q;\nbit c;\nmeasure q;", "measure q -> c"),
    ("qubit q;\nbit c;\nc = measure q;\nif (c) { c = measure q; }", "writes a bit the if reads"),
])
def test_valid_openqasm_3_that_qnet_does_not_run_says_what_to_use(body, what):
    error = refusal(Q3 + body)
    assert error.code == "UNSUPPORTED_INSTRUCTION" and what in error.message


def test_the_source_itself_is_bounded():
    assert refusal(Q2 + "qreg q[1];" + " " * limits.MAX_SOURCE_CHARS).code == "CIRCUIT_TOO_LARGE"


# --- what OpenQASM 3 means --------------------------------------------------------------------------------


def names(text: str) -> list[tuple[str, tuple[int, ...]]]:
    return [(op.name, op.qubits) for op in parse(text).ops]


def test_caret_is_xor_in_openqasm_3_and_power_in_openqasm_2():
    assert names(Q3 + "qubit[8] q;\nx q[1 ^ 3];\nx q[2 ** 2];") == [("x", (2,)), ("x", (4,))]
    assert parse(Q2 + "qreg q[1];\nrx(2^3) q[0];").ops[0].params == (8.0,)


def test_ranges_are_inclusive_and_steps_and_sets_work():
    text = Q3 + "qubit[6] q;\nfor int i in [0:2] { x q[i]; }\nfor int i in [5:-2:1] { h q[i]; }\n" \
        "for int i in {4, 0} { z q[i]; }\ncx q[0:1], q[2:3];"
    assert names(text) == [("x", (0,)), ("x", (1,)), ("x", (2,)), ("h", (5,)), ("h", (3,)), ("h", (1,)),
                           ("z", (4,)), ("z", (0,)), ("cx", (0, 2)), ("cx", (1, 3))]


def test_const_sizes_registers_and_angles():
    circuit = parse(Q3 + "const int n = 3;\nconst float t = pi / n;\nqubit[n] q;\nrx(t) q[n - 1];")
    assert circuit.num_qubits == 3 and circuit.ops[0].qubits == (2,)
    assert circuit.ops[0].params[0] == pytest.approx(3.141592653589793 / 3)


def test_if_else_on_a_bit_and_on_a_register():
    circuit = parse(Q3 + "qubit[2] q;\nbit[2] c;\nc[0] = measure q[0];\nif (c[0]) { x q[1]; } else { z q[1]; }\n"
                    "if (c == 2) y q[0];\nif (!c[1]) h q[1];")
    conditions = [(op.name, op.condition) for op in circuit.ops if op.condition]
    assert [(name, [(c.bits, c.value, c.equal) for c in cond]) for name, cond in conditions] == [
        ("x", [((0,), 1, True)]), ("z", [((0,), 1, False)]), ("y", [((0, 1), 2, True)]),
        ("h", [((1,), 1, False)])]


def test_physical_qubits_keep_their_numbers():
    circuit = parse(Q3 + "bit[2] c;\nh $3;\ncx $3, $5;\nc[0] = measure $3;\nc[1] = measure $5;")
    assert circuit.physical and circuit.num_qubits == 6 and circuit.active_qubits == (3, 5)
    assert refusal(Q3 + "qubit[2] q;\nh $0;").code == "INVALID_QASM"


def test_a_physical_circuit_on_a_lattice_starts_where_it_says():
    rigetti = build_devices(["rigetti_aspen"])["rigetti_aspen"]
    a, b = rigetti.spec.coupling_map[0]
    adjacent = parse(Q3 + f"bit[2] c;\nh ${a};\ncx ${a}, ${b};\nc[0] = measure ${a};\nc[1] = measure ${b};")
    distant = parse(Q3 + "bit[2] c;\nh $0;\ncx $0, $44;\nc[0] = measure $0;\nc[1] = measure $44;")
    assert rigetti.assess(adjacent, 100).two_qubit_gates == 1
    assert rigetti.assess(distant, 100).two_qubit_gates > 1  # qubit 0 is far from 44: the router adds SWAPs


# --- what each device states it can simulate ------------------------------------------------------------


def ghz(n: int) -> str:
    return Q2 + f"qreg q[{n}];\ncreg c[{n}];\nh q[0];\n" + "".join(
        f"cx q[{i}],q[{i + 1}];\n" for i in range(n - 1)) + "measure q -> c;\n"


@pytest.mark.parametrize(("device_id", "width"), [("rigetti_aspen", 24), ("rigetti_aspen", 40),
                                                  ("ibm_brisbane", 24), ("ionq_simulator", 27),
                                                  ("local_simulator", 28)])
def test_a_circuit_beyond_what_the_emulation_simulates_is_refused_up_front(device_id, width):
    device = build_devices([device_id])[device_id]
    with pytest.raises(errors.CircuitTooLarge) as raised:
        device.run(parse(ghz(width)), 100)
    message = raised.value.message
    assert f"acts on {width} qubits" in message and f"at most {device.spec.max_active_qubits}" in message


def test_noisy_shot_by_shot_work_counts_the_shots():
    ibm = build_devices(["ibm_brisbane"])["ibm_brisbane"]
    circuit = parse(ghz(16))
    assert ibm.assess(circuit, 10).two_qubit_gates >= 15
    with pytest.raises(errors.CircuitTooLarge, match="shots"):
        ibm.assess(circuit, 100_000)


# --- caches are bounded in bytes --------------------------------------------------------------------------


def test_a_bytes_bounded_cache_drops_the_least_recently_used_and_never_exceeds_its_bound():
    cache: BytesLRU[str] = BytesLRU(100, len)
    for key in "abcde":
        cache.put(key, key * 30)
        assert cache.bytes <= 100
    assert cache.get("a") is None and cache.get("e") == "e" * 30
    cache.put("huge", "x" * 101)
    assert cache.get("huge") is None and cache.bytes <= 100


def test_ibm_compilations_stay_within_their_byte_bound():
    ibm = build_devices(["ibm_brisbane"])["ibm_brisbane"]
    for k in range(40):  # forty different circuits, each compiled and cached
        ibm.assess(parse(Q2 + f"qreg q[3];\ncreg c[3];\nrx({k / 10}) q[0];\ncx q[0],q[1];\ncx q[1],q[2];\n"
                         "measure q -> c;"), 10)
    assert 0 < ibm._compiled.bytes <= ibm._compiled.max_bytes  # the bound is the behaviour


def test_a_refused_text_is_refused_again_without_reading_it_again():
    reads: list[str] = []

    class CountingReader(concurrent.futures.ThreadPoolExecutor):
        def submit(self, fn, *args, **kwargs):
            reads.append(args[0])
            return super().submit(fn, *args, **kwargs)

    async def scenario() -> None:
        with CountingReader(1) as reader, concurrent.futures.ThreadPoolExecutor(1) as executor:
            fleet = Fleet({}, executor, {}, reader=reader)
            hostile = Q2 + "qreg q[100000000];"
            for _ in range(3):
                with pytest.raises(errors.CircuitTooLarge):
                    await fleet.read(hostile)
            assert (await fleet.read(ghz(3))).num_qubits == 3

    asyncio.run(scenario())
    assert len(reads) == 2


def test_a_definition_broadcast_over_a_register_is_refused_by_its_whole_size_before_expanding():
    """16 doubling levels on a 4-qubit register make 4 x 65,536 operations: refused at once by the whole
    broadcast's size (it used to expand three copies, 0.44 s, before the fourth went over)."""
    text = 'OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[4];\ngate g0 a { h a; }\n'
    text += "".join(f"gate g{k} a {{ g{k - 1} a; g{k - 1} a; }}\n" for k in range(1, 17)) + "g16 q;\n"
    with pytest.raises(errors.CircuitTooLarge, match=r"g16 over 4 qubits expands to at least 262144 operations"):
        parse(text)
    one_qubit = text.replace("qreg q[4];", "qreg q[1];")
    assert len(parse(one_qubit).ops) == 65536  # the same definition on one qubit is within the limit
