"""A Qiskit provider for qnet (extra "qiskit"): each qnet backend as a `BackendV2`, each run as a `JobV1`.

    provider = QnetProvider(url, key)                 # or QNET_URL and QNET_API_KEY
    backend = provider.get_backend("ibm_brisbane")    # Target from GET /backends/{id} and its calibration
    job = backend.run(transpile(qc, backend), shots=1024)
    job.result().get_counts()

Per-shot memory: qnet's API returns counts, not the device's shot-by-shot record, so `memory=True` is refused
with an error, never answered with zeros. A Sampler needs samples, not the device's order: after
`backend.set_options(memory_from_counts=True)` the memory is the counts expanded into shots in random order
(seeded by `seed_simulator`), which is what `qiskit.primitives.BackendSamplerV2(backend=backend)` reads.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from typing import Any

try:
    import qiskit  # noqa: F401
except ImportError as error:  # pragma: no cover - depends on the installed extras
    raise ImportError("the Qiskit provider needs qiskit: pip install 'qnet[qiskit]'") from error
from qiskit import qasm2, qasm3
from qiskit.circuit import ControlFlowOp, IfElseOp, Measure, Parameter, QuantumCircuit, Reset
from qiskit.circuit.library import (
    CXGate,
    CZGate,
    ECRGate,
    HGate,
    IGate,
    RGate,
    RXGate,
    RXXGate,
    RYGate,
    RZGate,
    SXGate,
    UGate,
    XGate,
)
from qiskit.providers import BackendV2, JobError, JobStatus, JobV1, Options, QubitProperties
from qiskit.result import Result
from qiskit.result.models import ExperimentResult, ExperimentResultData
from qiskit.transpiler import InstructionProperties, Target

from qnet_client import models
from qnet_client.client import Client
from qnet_client.errors import QnetError, WaitTimeout

#: Batches take at most 100 circuits.
MAX_CIRCUITS = 100


def _gate(native: str):  # a Qiskit instruction, or None
    """The Qiskit standard gate for a qnet native gate name. IonQ's GPI(φ) is R(π, φ) up to a global phase and
    GPI2(φ) is R(π/2, φ), so both are `r`; MS is locally equivalent to RXX, which qnet compiles to MS."""
    a, b, c = Parameter("a"), Parameter("b"), Parameter("c")
    return {
        "rz": RZGate(a), "rx": RXGate(a), "ry": RYGate(a), "sx": SXGate(), "x": XGate(), "h": HGate(),
        "id": IGate(), "u": UGate(a, b, c), "cx": CXGate(), "cz": CZGate(), "ecr": ECRGate(), "ms": RXXGate(a),
        "gpi": RGate(a, b), "gpi2": RGate(a, b), "measure": Measure(), "reset": Reset(),
    }.get(native)


#: Two-qubit natives that act the same either way round: a coupling edge allows both directions.
SYMMETRIC = {"cz", "ms", "rxx"}


def build_target(info: models.Backend, calibration: models.Calibration | None) -> Target:
    """The Target of a qnet backend: its qubits, its natives as Qiskit standard gates, its coupling map, and the
    calibration's per-qubit T1/T2, gate errors and durations and readout errors where it has them."""
    cal = calibration or models.Calibration()
    n = info.num_qubits
    qubit_props = None
    if cal.qubits:
        by_qubit = {q.qubit: q for q in cal.qubits}
        qubit_props = [QubitProperties(t1=by_qubit[q].t1_us * 1e-6 if q in by_qubit else None,
                                       t2=by_qubit[q].t2_us * 1e-6 if q in by_qubit else None) for q in range(n)]
    target = Target(description=f"qnet {info.id}", num_qubits=n, qubit_properties=qubit_props)
    gates: dict[tuple[str, tuple[int, ...]], InstructionProperties] = {}
    for g in cal.gates:
        gates[(g.gate, tuple(g.qubits))] = InstructionProperties(
            duration=g.duration_ns * 1e-9 if g.duration_ns else None, error=g.error)
    readout = {q.qubit: q.readout_error for q in cal.qubits}
    edges = sorted({(e.control, e.target) for e in info.coupling_map})

    natives = list(dict.fromkeys([*info.native_gates, "measure"]))
    if any(name == "reset" for name, _ in gates):
        natives.append("reset")
    added: set[str] = set()
    for native in natives:
        if native == "if_else":
            continue
        gate = _gate(native)
        if gate is None or gate.name in added:
            continue  # unknown to this client, or a second native for the same Qiskit gate (gpi, gpi2)
        added.add(gate.name)
        if gate.num_qubits == 1:
            if not edges and not any(name == native for name, _ in gates) and native != "measure":
                target.add_instruction(gate, None)  # no calibration: the gate on every qubit, no figures
                continue
            props = {}
            for q in range(n):
                found = gates.get((native, (q,)))
                if native == "measure" and q in readout:
                    found = InstructionProperties(duration=found.duration if found else None, error=readout[q])
                props[(q,)] = found
            target.add_instruction(gate, props)
        elif not edges:
            target.add_instruction(gate, None)  # all-to-all
        else:
            props = {}
            for control, tgt in edges:
                pairs = [(control, tgt), (tgt, control)] if native in SYMMETRIC else [(control, tgt)]
                for pair in pairs:
                    props[pair] = gates.get((native, pair)) or gates.get((native, pair[::-1]))
            target.add_instruction(gate, props)
    if info.supports_classical_control:
        target.add_instruction(IfElseOp, name="if_else")
    return target


def to_qasm(circuit: QuantumCircuit) -> str:
    """OpenQASM 2 where it can say the circuit, OpenQASM 3 for classical control flow."""
    if circuit.parameters:
        raise ValueError(f"circuit {circuit.name!r} has unbound parameters {sorted(p.name for p in circuit.parameters)}"
                         "; bind them first (assign_parameters), or run it through a Sampler")
    if any(isinstance(inst.operation, ControlFlowOp) for inst in circuit.data):
        return qasm3.dumps(circuit)
    try:
        return qasm2.dumps(circuit)
    except qasm2.QASM2ExportError:
        return qasm3.dumps(circuit)


_STATUS = {"queued": JobStatus.QUEUED, "running": JobStatus.RUNNING, "completed": JobStatus.DONE,
           "failed": JobStatus.ERROR, "cancelled": JobStatus.CANCELLED}


class QnetJob(JobV1):
    """One `backend.run`: a qnet job per circuit (one job, or a batch)."""

    def __init__(self, backend: QnetBackend, job_id: str, circuits: list[QuantumCircuit], job_ids: list[str],
                 options: dict[str, Any]) -> None:
        super().__init__(backend, job_id)
        self._circuits = circuits
        self.qnet_job_ids = job_ids
        self._options = options
        self._result: Result | None = None

    @property
    def _client(self) -> Client:
        return self.backend().provider.client

    def submit(self) -> None:
        raise JobError("QnetJob is submitted by backend.run")

    def _jobs(self) -> list[models.Job]:
        return [self._client.get_job(job_id) for job_id in self.qnet_job_ids]

    def status(self) -> JobStatus:
        states = [job.status for job in self._jobs()]
        for state in ("failed", "cancelled", "running", "queued"):
            if state in states and (state in ("running", "queued") or all(s in models.TERMINAL_STATUSES
                                                                            for s in states)):
                return _STATUS[state]
        return JobStatus.DONE if all(s == "completed" for s in states) else JobStatus.RUNNING

    def cancel(self) -> bool:
        """Cancels every job still queued or running; True when at least one was cancelled."""
        cancelled = False
        for job in self._jobs():
            if not job.done:
                try:
                    cancelled = self._client.cancel_job(job.job_id).status == "cancelled" or cancelled
                except QnetError as error:
                    if error.code != "JOB_ALREADY_FINISHED":
                        raise
        return cancelled

    def result(self, timeout: float | None = None) -> Result:
        """Waits for every job; JobError when one failed or was cancelled, or when `timeout` passed."""
        if self._result is not None:
            return self._result
        deadline = None if timeout is None else time.monotonic() + timeout
        finished = []
        for job_id in self.qnet_job_ids:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                finished.append(self._client.wait(job_id, timeout=left))
            except WaitTimeout as error:
                raise JobError(str(error)) from error
        for job in finished:
            if job.status != "completed":
                detail = f": {job.error.code}: {job.error.message}" if job.error and job.error.code else ""
                raise JobError(f"qnet job {job.job_id} {job.status}{detail}")
        rng = random.Random(self._options.get("seed_simulator"))
        experiments = [self._experiment(circuit, job, rng) for circuit, job in zip(self._circuits, finished,
                                                                                    strict=True)]
        self._result = Result(backend_name=self.backend().name, backend_version=self.backend().backend_version,
                              job_id=self.job_id(), success=True, results=experiments)
        return self._result

    def _experiment(self, circuit: QuantumCircuit, job: models.Job, rng: random.Random) -> ExperimentResult:
        counts = {hex(int(key.replace(" ", "") or "0", 2)): value for key, value in job.counts.items()}
        memory = None
        if self._options.get("memory"):
            memory = [outcome for outcome, value in counts.items() for _ in range(value)]
            rng.shuffle(memory)
        header = {"name": circuit.name, "creg_sizes": [[reg.name, reg.size] for reg in circuit.cregs],
                  "memory_slots": circuit.num_clbits, "metadata": circuit.metadata or {},
                  "qnet_job_id": job.job_id, "qnet_backend": job.backend}
        return ExperimentResult(shots=job.shots, success=True, header=header, status=job.status,
                                data=ExperimentResultData(counts=counts, memory=memory))


class QnetBackend(BackendV2):
    def __init__(self, provider: QnetProvider, info: models.Backend, calibration: models.Calibration | None) -> None:
        super().__init__(provider=provider, name=info.id, description=info.description or info.name,
                         backend_version="2")
        self.info = info
        self.calibration = calibration
        self._target = build_target(info, calibration)
        self.options.set_validator("shots", (1, info.max_shots or 100_000))

    @property
    def target(self) -> Target:
        return self._target

    @property
    def max_circuits(self) -> int:
        return MAX_CIRCUITS

    @classmethod
    def _default_options(cls) -> Options:
        return Options(shots=1024, memory=False, memory_from_counts=False, seed_simulator=None)

    def run(self, run_input: QuantumCircuit | Sequence[QuantumCircuit], **options: Any) -> QnetJob:
        """Submits the circuits (OpenQASM) to this backend: one qnet job, or a batch for several circuits.
        Options: shots, memory (see the module's note), memory_from_counts, seed_simulator."""
        unknown = set(options) - set(self.options.__dict__)
        if unknown:
            raise ValueError(f"unknown run options {sorted(unknown)} for {self.name}; known: "
                             f"{sorted(self.options.__dict__)}")
        merged = {**self.options.__dict__, **options}
        if merged["memory"] and not merged["memory_from_counts"]:
            raise ValueError(
                f"{self.name}: per-shot memory is not available: qnet's API returns counts, not each shot in "
                "order. Use counts (memory=False); or, if samples in random order will do (a Sampler's case), "
                "set backend.set_options(memory_from_counts=True) first")
        shots = int(merged["shots"])
        circuits = [run_input] if isinstance(run_input, QuantumCircuit) else list(run_input)
        if not circuits:
            raise ValueError("no circuits to run")
        if len(circuits) > MAX_CIRCUITS:
            raise ValueError(f"at most {MAX_CIRCUITS} circuits per run (max_circuits)")
        texts = [to_qasm(c) for c in circuits]
        client = self.provider.client
        if len(texts) == 1:
            job = client.execute(texts[0], [self.name], "ordered", shots, return_immediately=True)
            return QnetJob(self, job.job_id, circuits, [job.job_id], merged)
        batch = client.execute_batch(texts, [self.name], "ordered", shots)
        return QnetJob(self, batch.batch_id, circuits, [j.job_id for j in batch.jobs], merged)


class QnetProvider:
    """The backends of one qnet network, for Qiskit."""

    def __init__(self, url: str | None = None, key: str | None = None, *, client: Client | None = None) -> None:
        self.client = client or Client(url, key)

    def backends(self, name: str | None = None, *, online: bool = False) -> list[QnetBackend]:
        """Every backend (or the one named), each with its Target; `online`: only those online now."""
        found = [b for b in self.client.backends() if (name is None or b.id == name)
                 and (not online or b.status == "online")]
        return [self.get_backend(b.id) for b in found]

    def get_backend(self, name: str) -> QnetBackend:
        info = self.client.backend(name)  # the listing leaves the coupling map out; the details have it
        calibration = self.client.calibration(name)
        return QnetBackend(self, info, calibration)

    def __repr__(self) -> str:
        return f"QnetProvider({self.client.config.base_url!r})"


__all__ = ["QnetBackend", "QnetJob", "QnetProvider", "build_target", "to_qasm"]
