"""Reading circuits: qnet's front door against Qiskit's own readers on the same texts, side by side in one run,
and the time to refuse hostile texts. Writes bench/results/circuits.md.

Texts: 100,000 random gates (h, cx, rz) on 20 qubits in OpenQASM 2 (the target: well under a second), every
QASMBench small and medium file, and the bug report's hostile circuits. Qiskit's readers are the in-process
SDK calls a user would otherwise make: qasm2.loads (Rust) and qasm3.loads (the ANTLR reference parser).
"""

from __future__ import annotations

import os
import pathlib
import platform
import random
import statistics
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "gen")]

from qiskit import qasm2, qasm3  # noqa: E402

from qnet_common import errors  # noqa: E402
from services.backends.domain.qasm import parse  # noqa: E402

QASMBENCH = ROOT.parent / "shared" / "qasmbench"
REPEATS = 5


def random_gates(n: int, version: str) -> str:
    rng = random.Random(1)
    if version == "2":
        lines = ["OPENQASM 2.0;", 'include "qelib1.inc";', "qreg q[20];", "creg c[20];"]
    else:
        lines = ["OPENQASM 3.0;", 'include "stdgates.inc";', "qubit[20] q;", "bit[20] c;"]
    for _ in range(n):
        r = rng.random()
        a, b = rng.sample(range(20), 2)
        if r < 0.4:
            lines.append(f"cx q[{a}], q[{b}];")
        else:
            lines.append(f"h q[{a}];" if r < 0.7 else f"rz({rng.random():.6f}) q[{a}];")
    lines.append("measure q -> c;" if version == "2" else "c = measure q;")
    return "\n".join(lines)


def timed(fn, repeats: int = REPEATS) -> float:
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def refusal_time(text: str) -> tuple[float, str]:
    def attempt() -> str:
        try:
            parse(text)
        except errors.QnetError as error:
            return error.code
        return "accepted"

    code = attempt()
    return timed(attempt), code


def hostile() -> dict[str, str]:
    q2, q3 = 'OPENQASM 2.0;\ninclude "qelib1.inc";\n', 'OPENQASM 3.0;\ninclude "stdgates.inc";\n'
    doubling = "".join(f"gate g{k} a {{ g{k - 1} a; g{k - 1} a; }}\n" for k in range(1, 31))
    return {
        "`qreg q[100000000]; h q;`": q2 + "qreg q[100000000];\nh q;",
        "30 levels of doubling definitions (1.4 KB)": q2 + "qreg q[1];\ngate g0 a { h a; }\n" + doubling + "g30 q[0];",
        "16 levels of doubling definitions, legal (65,536 gates)": q2 + "qreg q[1];\ngate g0 a { h a; }\n"
        + "".join(f"gate g{k} a {{ g{k - 1} a; g{k - 1} a; }}\n" for k in range(1, 17)) + "g16 q[0];",
        "a loop of 10^9 iterations": q3 + "qubit q;\nfor int i in [0:999999999] { x q; }",
        "8 nested loops of 10": q3 + "qubit q;\n" + "".join(f"for int i{k} in [0:9] {{ " for k in range(8))
        + "x q;" + " }" * 8,
        "100,000 iterations of `ctrl @ pow(0.3) @ h`": q3 + "qubit[2] q;\nfor int i in [0:99999] "
        "{ ctrl @ pow(0.3) @ h q[0], q[1]; }",
        "`ctrl(16) @ x`": q3 + "qubit[17] q;\nctrl(16) @ x " + ", ".join(f"q[{i}]" for i in range(17)) + ";",
        "2,000 nested parentheses": q2 + "qreg q[1];\nrx(" + "(" * 2000 + "1" + ")" * 2000 + ") q[0];",
        "`include \"/etc/passwd\";`": 'OPENQASM 2.0;\ninclude "/etc/passwd";\nqreg q[1];',
    }


def main() -> None:
    lines = ["# Reading circuits", "",
             f"One run on {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()};"
             f" median of {REPEATS}. Ratio = qnet / Qiskit (below 1: qnet is faster).", "",
             "## qnet's reading against Qiskit's readers, same text", "",
             "| text | qnet | Qiskit | ratio |", "|---|---|---|---|"]
    text2, text3 = random_gates(100_000, "2"), random_gates(100_000, "3")
    ours2 = timed(lambda: parse(text2))
    theirs2 = timed(lambda: qasm2.loads(text2, custom_instructions=qasm2.LEGACY_CUSTOM_INSTRUCTIONS))
    lines.append(f"| 100,000 gates, OpenQASM 2 ({len(text2) // 1024} KiB) | {ours2:.3f} s | {theirs2:.3f} s"
                 f" (`qasm2.loads`) | {ours2 / theirs2:.2f} |")
    small3 = random_gates(2_000, "3")
    ours3 = timed(lambda: parse(small3))
    theirs3 = timed(lambda: qasm3.loads(small3), 1)
    lines.append(f"| 2,000 gates, OpenQASM 3 | {ours3 * 1000:.1f} ms | {theirs3 * 1000:.0f} ms (`qasm3.loads`)"
                 f" | {ours3 / theirs3:.3f} |")
    ours3_big = timed(lambda: parse(text3))
    lines.append(f"| 100,000 gates, OpenQASM 3 | {ours3_big:.3f} s | not measured (about {theirs3 * 50:.0f} s"
                 " at the rate above) | |")
    total_ours = total_theirs = 0.0
    files = sorted(QASMBENCH.glob("small/*.qasm")) + sorted(QASMBENCH.glob("medium/*.qasm"))
    read = 0
    for path in files:
        text = path.read_text()
        try:
            qasm2.loads(text, custom_instructions=qasm2.LEGACY_CUSTOM_INSTRUCTIONS)
        except Exception:  # files Qiskit refuses (vqe_uccsd) are left out of both sums
            continue
        read += 1
        total_ours += timed(lambda t=text: parse(t), 3)
        total_theirs += timed(lambda t=text: qasm2.loads(t, custom_instructions=qasm2.LEGACY_CUSTOM_INSTRUCTIONS), 3)
    lines.append(f"| QASMBench small + medium, {read} files | {total_ours:.3f} s | {total_theirs:.3f} s"
                 f" (`qasm2.loads`) | {total_ours / total_theirs:.2f} |")
    lines += ["", "## Hostile texts: time to the answer", "", "| text | time | answer |", "|---|---|---|"]
    for name, text in hostile().items():
        seconds, code = refusal_time(text)
        lines.append(f"| {name} | {seconds * 1000:.1f} ms | {code} |")
    out = ROOT / "bench" / "results" / "circuits.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
