"""`qnet`: the network from the shell. Run `qnet --help` for the commands and the exit codes."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from qnet_client import models
from qnet_client._core import DEFAULT_URL, from_environment
from qnet_client.client import Client
from qnet_client.errors import QnetError, WaitTimeout

# --- exit codes: the one table (printed by `qnet --help`, quoted in the README) ---------------------------

OK, JOB_FAILED, USAGE, AUTH, NOT_FOUND, UNAVAILABLE, QUOTA, TIMEOUT, CONFLICT, INTERNAL = 0, 1, 2, 3, 4, 5, 6, 7, 8, 70
INTERRUPTED = 130

EXIT_CODES: tuple[tuple[int, str, tuple[str, ...]], ...] = (
    (OK, "success (for a job: it completed)", ()),
    (JOB_FAILED, "execute, batch, jobs watch: the job (or a job of the batch) failed or was cancelled",
     ("ALL_BACKENDS_FAILED", "AGGREGATION_FAILED")),
    (USAGE, "bad arguments, or the request was refused as invalid (400)",
     ("INVALID_ARGUMENT", "INVALID_STRATEGY", "INVALID_QASM", "CIRCUIT_TOO_LARGE", "INVALID_SHOTS",
      "UNSUPPORTED_INSTRUCTION", "INVALID_AGGREGATION_METHOD", "INVALID_COUNTS")),
    (AUTH, "missing or wrong API key, or a key not allowed the call (401, 403)",
     ("UNAUTHENTICATED", "PERMISSION_DENIED")),
    (NOT_FOUND, "no such backend, job, batch or file (404)", ("BACKEND_NOT_FOUND", "JOB_NOT_FOUND")),
    (UNAVAILABLE, "unavailable after the automatic retries: try again later (503, connection errors)",
     ("UNAVAILABLE", "BACKEND_UNAVAILABLE", "NO_BACKENDS", "CONNECTION_ERROR", "WATCHER_TOO_SLOW")),
    (QUOTA, "the key's daily quota would be exceeded (403)", ("QUOTA_EXCEEDED",)),
    (TIMEOUT, "--wait-timeout passed before the job ended (the job goes on)", ("WAIT_TIMEOUT",)),
    (CONFLICT, "cancelling a job that had already finished (409)", ("JOB_ALREADY_FINISHED",)),
    (INTERNAL, "an internal error in qnet or an unexpected answer", ("INTERNAL",)),
    (INTERRUPTED, "interrupted (Ctrl-C)", ()),
)
EXIT_OF_CODE = {code: exit_code for exit_code, _, codes in EXIT_CODES for code in codes}


def exit_code_of(error: QnetError) -> int:
    return EXIT_OF_CODE.get(error.code, INTERNAL)


def exit_codes_text() -> str:
    lines = ["exit codes:"]
    for exit_code, meaning, codes in EXIT_CODES:
        lines.append(f"  {exit_code:<4} {meaning}" + (f" [{', '.join(codes)}]" if codes else ""))
    return "\n".join(lines)


class UsageError(Exception):
    """A problem with the command line or a local file; exits with USAGE (or NOT_FOUND for a missing file)."""

    def __init__(self, message: str, exit_code: int = USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# --- terminal output ----------------------------------------------------------------------------------------

BAR_WIDTH = 40
MAX_OUTCOMES = 32


def histogram(counts: dict[str, int], width: int = BAR_WIDTH, limit: int = MAX_OUTCOMES) -> list[str]:
    """Counts as bars, bitstrings in order, the bars scaled to the largest count; at most `limit` outcomes
    (the most frequent), and a line saying how many more there are."""
    if not counts:
        return ["  (no counts)"]
    total = sum(counts.values())
    shown = sorted(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:limit])
    peak = max(v for _, v in shown)
    label = max(len(k) for k, _ in shown)
    digits = len(str(peak))
    eighths = " ▏▎▍▌▋▊▉"
    lines = []
    for outcome, count in shown:
        length = count / peak * width if peak else 0
        bar = "█" * int(length) + (eighths[int((length % 1) * 8)].strip() if length % 1 else "")
        lines.append(f"  {outcome:>{label}}  {bar:<{width}}  {count:>{digits}}  {100 * count / total:5.1f}%")
    hidden = len(counts) - len(shown)
    if hidden:
        lines.append(f"  ... {hidden} more outcomes ({sum(counts.values()) - sum(v for _, v in shown)} shots)")
    return lines


def describe_job(job: models.Job) -> list[str]:
    head = f"job {job.job_id} {job.status}"
    if job.backend:
        head += f" on {job.backend}"
    if job.status == "completed" or job.execution_time_s:
        head += f" (queue {job.queue_time_s:.2f} s, execution {job.execution_time_s:.2f} s, {job.shots} shots)"
    lines = [head]
    if job.selection and job.selection.reason:
        lines.append(f"  chosen by {job.selection.strategy}: {job.selection.reason}")
    if job.error and job.error.code:
        lines.append(f"  error {job.error.code}: {job.error.message}")
    multi = len(job.results) > 1 or job.aggregated_counts
    if multi:
        for run in job.results:
            line = f"  {run.backend}: {run.status}"
            if run.error and run.error.code:
                line += f" ({run.error.code}: {run.error.message})"
            lines.append(line)
            if run.counts:
                lines.extend("  " + line for line in histogram(run.counts))
        if job.aggregated_counts:
            lines.append(f"  aggregated ({job.aggregation_method}, confidence {job.aggregation_confidence:.3f}):")
            lines.extend("  " + line for line in histogram(job.aggregated_counts))
    elif job.counts:
        lines.extend(histogram(job.counts))
    return lines


class Progress:
    """One line on stderr, rewritten in place while a job waits and runs; only when stderr is a terminal."""

    FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"

    def __init__(self, stream: TextIO, enabled: bool | None = None) -> None:
        self._stream = stream
        self.enabled = stream.isatty() if enabled is None else enabled
        self._started = time.monotonic()
        self._frame = 0
        self._shown = False

    def update(self, job: models.Job) -> None:
        if not self.enabled:
            return
        self._frame = (self._frame + 1) % len(self.FRAMES)
        where = f" on {job.backend}" if job.backend else ""
        text = f"{self.FRAMES[self._frame]} {job.job_id} {job.status}{where}  {time.monotonic() - self._started:.1f} s"
        self._stream.write("\r\x1b[2K" + text)
        self._stream.flush()
        self._shown = True

    def done(self) -> None:
        if self._shown:
            self._stream.write("\r\x1b[2K")
            self._stream.flush()
            self._shown = False


# --- commands ---------------------------------------------------------------------------------------------

class Output:
    def __init__(self, as_json: bool, out: TextIO, err: TextIO) -> None:
        self.as_json, self.out, self.err = as_json, out, err

    def result(self, value: Any, lines: Callable[[], list[str]]) -> None:
        if self.as_json:
            json.dump(models.to_json(value), self.out, indent=2, sort_keys=False)
            self.out.write("\n")
        else:
            self.out.write("\n".join(lines()) + "\n")


def _read(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except FileNotFoundError:
        raise UsageError(f"no such file: {path}", NOT_FOUND) from None
    except OSError as error:
        raise UsageError(f"cannot read {path}: {error.strerror}") from None


def _list(text: str | None) -> list[str]:
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def _job_exit(job: models.Job) -> int:
    return OK if job.status == "completed" else JOB_FAILED


def _wait(client: Client, job: models.Job, args: argparse.Namespace, err: TextIO) -> models.Job:
    if job.done or args.no_wait:
        return job
    progress = Progress(err)
    try:
        return client.wait(job.job_id, timeout=args.wait_timeout, on_update=progress.update)
    finally:
        progress.done()


def cmd_execute(client: Client, args: argparse.Namespace, out: Output) -> int:
    aggregate = args.aggregate or ""
    job = client.execute(_read(args.file), _list(args.backends), args.strategy or "", args.shots or 0,
                         aggregate=bool(aggregate), aggregation_method=aggregate, return_immediately=True,
                         idempotency_key=args.idempotency_key)
    job = _wait(client, job, args, out.err)
    out.result(job, lambda: describe_job(job))
    return OK if args.no_wait and not job.done else _job_exit(job)


def cmd_batch(client: Client, args: argparse.Namespace, out: Output) -> int:
    batch = client.execute_batch([_read(path) for path in args.files], _list(args.backends), args.strategy or "",
                                 args.shots or 0, idempotency_key=args.idempotency_key)
    if not args.no_wait:
        progress = Progress(out.err)
        deadline = None if args.wait_timeout is None else time.monotonic() + args.wait_timeout
        try:
            while not batch.done:
                if deadline is not None and time.monotonic() > deadline:
                    raise WaitTimeout(f"batch {batch.batch_id} is still {batch.status} after {args.wait_timeout:g} s")
                if progress.enabled:
                    finished = sum(j.done for j in batch.jobs)
                    progress.update(models.Job(job_id=batch.batch_id, status=f"{finished}/{len(batch.jobs)} done"))
                time.sleep(0.3)
                batch = client.get_batch(batch.batch_id)
        finally:
            progress.done()

    def lines() -> list[str]:
        text = [f"batch {batch.batch_id} {batch.status}: {len(batch.jobs)} jobs"]
        for path, job in zip(args.files, batch.jobs, strict=False):
            text.append(f"{path}:")
            text.extend("  " + line for line in describe_job(job))
        return text

    out.result(batch, lines)
    if args.no_wait and not batch.done:
        return OK
    return OK if all(j.status == "completed" for j in batch.jobs) else JOB_FAILED


def cmd_jobs(client: Client, args: argparse.Namespace, out: Output) -> int:
    if args.action == "get":
        job = client.get_job(args.job_id)
        out.result(job, lambda: describe_job(job))
        return OK
    if args.action == "cancel":
        job = client.cancel_job(args.job_id)
        out.result(job, lambda: describe_job(job))
        return OK
    return _watch_job(client, args.job_id, out)


class _Finished(Exception):
    def __init__(self, job: models.Job) -> None:
        self.job = job


def _watch_job(client: Client, job_id: str, out: Output) -> int:
    """Prints the job's events until it ends. The job is read once subscribed, so an end that came before the
    subscription is not waited for in vain."""
    job = client.get_job(job_id)  # JOB_NOT_FOUND before any stream
    if not job.done:
        def check() -> None:
            current = client.get_job(job_id)
            if current.done:
                raise _Finished(current)

        try:
            for event in client.watch(job_id=job_id, topics=("job_updates",), on_subscribed=check):
                if out.as_json:
                    out.out.write(json.dumps(models.to_json(event)) + "\n")
                else:
                    where = f" on {event.backend}" if event.backend else ""
                    out.out.write(f"{event.timestamp} event {event.event_id}: {event.status}{where}\n")
                out.out.flush()
                if event.status in models.TERMINAL_STATUSES:
                    break
        except _Finished as finished:
            job = finished.job
        else:
            job = client.get_job(job_id)
    if out.as_json:
        out.out.write(json.dumps(models.to_json(job)) + "\n")
    else:
        out.out.write("\n".join(describe_job(job)) + "\n")
    return _job_exit(job)


def cmd_backends(client: Client, args: argparse.Namespace, out: Output) -> int:
    if args.backend_id is None:
        if args.calibration or args.queue:
            raise UsageError("--calibration and --queue need a backend id: qnet backends ID --queue")
        found = client.backends()
        out.result(found, lambda: [f"{'id':<18} {'status':<12} {'qubits':>6} {'queue':>5}  natives"] + [
            f"{b.id:<18} {b.status:<12} {b.num_qubits:>6} {b.queue_depth:>5}  {','.join(b.native_gates)}"
            for b in found])
        return OK
    if args.calibration:
        cal = client.calibration(args.backend_id)
        s = cal.summary or models.CalibrationSummary()
        out.result(cal, lambda: [
            f"{cal.backend_id} calibration taken {cal.taken_at} ({cal.source})",
            f"  median T1 {s.median_t1_us:g} us, median T2 {s.median_t2_us:g} us",
            f"  mean readout error {s.mean_readout_error:.4f}, 1q error {s.mean_single_qubit_error:.5f}, "
            f"2q error {s.mean_two_qubit_error:.5f}",
            f"  {len(cal.qubits)} qubits, {len(cal.gates)} gate entries"])
        return OK
    if args.queue:
        q = client.queue(args.backend_id)
        out.result(q, lambda: [
            f"{q.backend_id}: {q.queue_depth} queued, {q.running} running (of {q.concurrency}), "
            f"estimated wait {q.estimated_wait_s:.2f} s, {q.completed_tasks} completed"] + [
            f"  {t.task_id} {t.status} {t.shots} shots, {t.age_s:.1f} s old" for t in q.tasks])
        return OK
    b = client.backend(args.backend_id)
    out.result(b, lambda: [
        f"{b.id}: {b.name} ({b.provider}, {b.technology}) {b.status}",
        f"  {b.num_qubits} qubits, {b.connectivity}, {len(b.coupling_map)} coupling edges",
        f"  natives {', '.join(b.native_gates)}; max shots {b.max_shots}; queue {b.queue_depth}",
        f"  {b.description}"])
    return OK


def cmd_status(client: Client, args: argparse.Namespace, out: Output) -> int:
    s = client.status()
    out.result(s, lambda: [f"network {s.overall_status}: {s.total_capacity} qubits online, {s.active_jobs} active "
                           "jobs"] + [f"  {b.id:<18} {b.status:<12} queue {b.queue_depth}" for b in s.backends])
    return OK


def cmd_metrics(client: Client, args: argparse.Namespace, out: Output) -> int:
    m = client.metrics()
    out.result(m, lambda: [
        "jobs: " + ", ".join(f"{k} {v}" for k, v in sorted(m.jobs_by_status.items())),
        f"shots executed {m.shots_executed}, cost spent {m.cost_spent:.2f} {m.currency}"] + [
        f"  {b.backend:<18} runs {b.runs:>5}  success {100 * b.success_rate:5.1f}%  exec p50 "
        f"{b.execution_time_p50_s:.3f} s" for b in m.backends])
    return OK


def cmd_topology(client: Client, args: argparse.Namespace, out: Output) -> int:
    t = client.topology()
    out.result(t, lambda: [f"{n.kind:<8} {n.id:<28} {n.status:<10} {n.address or n.connectivity}"
                           for n in t.nodes] + [f"  {link.source} -> {link.target} ({link.protocol})"
                                                for link in t.links])
    return OK


def cmd_estimate(client: Client, args: argparse.Namespace, out: Output) -> int:
    e = client.estimate(_read(args.file), args.shots or 0, _list(args.backends), args.strategy or "")
    out.result(e, lambda: [f"{e.strategy}: {', '.join(e.selected) or 'none'} for {e.total_cost:.4f} {e.currency} "
                           f"({e.shots} shots)"] + [
        f"  {b.backend:<18} {b.cost:>10.4f} {e.currency}  ~{b.estimated_execution_s:.2f} s"
        + ("" if b.eligible else f"  not eligible: {b.note}") for b in e.backends])
    return OK


def cmd_keys(client: Client | None, args: argparse.Namespace, out: Output) -> int:
    # The key store lives in the service's database: this runs where the mesh's QNET_DATA_DIR or
    # QNET_DATABASE_URL points (as `make api-key` does), with qnet_common's own code.
    from qnet_common.db import Database
    from qnet_common.keys import ApiKeyStore
    from qnet_common.settings import Settings

    settings = Settings.from_env()
    key, secret = ApiKeyStore(Database(settings.db_url)).create(
        args.name, shots_per_day=args.shots_per_day, cost_per_day=args.cost_per_day, admin=args.admin)
    if out.as_json:
        out.result({"key": secret, "key_id": key.key_id, "name": key.name, "admin": key.admin,
                    "shots_per_day": key.shots_per_day, "cost_per_day": key.cost_per_day}, list)
    else:
        out.out.write(secret + "\n")
        out.err.write(f"created key_id={key.key_id} name={key.name} (the key is shown only once)\n")
    return OK


def cmd_admin(client: Client | None, args: argparse.Namespace, out: Output) -> int:
    import grpc

    from qnet_client.grpc_client import ensure_stubs

    ensure_stubs()
    from services.backends.cli import set_status

    key = (args.admin_key or from_environment("QNET_ADMIN_KEY") or args.key
           or from_environment("QNET_API_KEY", "QCOS_API_KEY"))
    try:
        device = set_status(args.address, key, args.backend_id, args.status)
    except grpc.RpcError as error:
        from qnet_client.grpc_client import error_of

        raise error_of(error) from error
    out.result({"id": device.id, "status": device.status}, lambda: [f"{device.id} is now {device.status}"])
    return OK


# --- the parser -------------------------------------------------------------------------------------------

def parser() -> argparse.ArgumentParser:
    # Connection and output options go before or after the command (`qnet status --json` works).
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=argparse.SUPPRESS, help=f"the API (default QNET_URL or {DEFAULT_URL})")
    common.add_argument("--key", default=argparse.SUPPRESS, help="API key (default QNET_API_KEY or QCOS_API_KEY)")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="print the result as JSON on stdout (errors too), no progress display")
    common.add_argument("--timeout", type=float, default=argparse.SUPPRESS,
                        help="seconds for each HTTP request (default 90)")

    top = argparse.ArgumentParser(
        prog="qnet", parents=[common], formatter_class=argparse.RawDescriptionHelpFormatter,
        description="qnet: run circuits on the quantum network from the shell.",
        epilog=exit_codes_text() + "\n\nTransient failures (503 UNAVAILABLE, connection errors) are retried with "
        "backoff;\nsubmissions carry an Idempotency-Key, so a retry never makes a second job.")
    # No top.set_defaults for these: it would change the shared actions' defaults, and a subcommand's parse would
    # then reset an option given before it. Missing ones are filled in by `main`.
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, handler: Callable, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, parents=[common], help=help_text, description=help_text)
        sub.set_defaults(handler=handler)
        return sub

    def run_options(sub: argparse.ArgumentParser, waits: bool = True) -> None:
        sub.add_argument("--backends", help="comma-separated backend ids (default: every backend)")
        sub.add_argument("--strategy", help="fastest, best_fidelity, round_robin, cost_optimized, ordered or all")
        sub.add_argument("--shots", type=int, help="shots per backend (default 1024)")
        if waits:
            sub.add_argument("--no-wait", action="store_true", help="print the accepted job and return at once")
            sub.add_argument("--wait-timeout", type=float, default=600.0,
                             help="seconds to wait for the end (default 600; exit 7 after it)")
            sub.add_argument("--idempotency-key", help="reuse to make a retried submission return the same job")

    ex = command("execute", cmd_execute, "run a circuit file (OpenQASM 2 or 3; - for stdin) and show its counts")
    ex.add_argument("file")
    run_options(ex)
    ex.add_argument("--aggregate", metavar="METHOD",
                    help="with --strategy all: combine the counts (weighted_average, majority_vote, ...)")

    batch = command("batch", cmd_batch, "run several circuit files as one batch")
    batch.add_argument("files", nargs="+")
    run_options(batch)

    jobs = command("jobs", cmd_jobs, "read, cancel or follow a job")
    jobs.add_argument("action", choices=("get", "cancel", "watch"))
    jobs.add_argument("job_id")

    be = command("backends", cmd_backends, "list the backends, or show one (its calibration, its queue)")
    be.add_argument("backend_id", nargs="?")
    which = be.add_mutually_exclusive_group()
    which.add_argument("--calibration", action="store_true", help="the backend's calibration")
    which.add_argument("--queue", action="store_true", help="the backend's queue")

    command("status", cmd_status, "the network's status")
    command("metrics", cmd_metrics, "the network's metrics")
    command("topology", cmd_topology, "services, replicas and devices")

    est = command("estimate", cmd_estimate, "estimate the cost of running a circuit file")
    est.add_argument("file")
    run_options(est, waits=False)

    keys = command("keys", cmd_keys, "create an API key in the service's database (QNET_DATA_DIR or "
                   "QNET_DATABASE_URL)")
    keys.add_argument("action", choices=("create",))
    keys.add_argument("--name", default=from_environment("USER") or "dev", help="who the key is for")
    keys.add_argument("--shots-per-day", type=int, help="daily shot budget (default none)")
    keys.add_argument("--cost-per-day", type=float, help="daily cost budget in USD (default none)")
    keys.add_argument("--admin", action="store_true", help="an operator key (may change backend statuses)")

    admin = command("admin", cmd_admin, "operators: set a backend's status (over gRPC, to a backends replica)")
    admin.add_argument("noun", choices=("backend",))
    admin.add_argument("action", choices=("set-status",))
    admin.add_argument("backend_id")
    admin.add_argument("status", choices=("online", "maintenance", "offline"))
    admin.add_argument("--address", default=from_environment("QNET_BACKENDS_ADDR") or "127.0.0.1:50052",
                       help="any backends replica (default QNET_BACKENDS_ADDR or 127.0.0.1:50052)")
    admin.add_argument("--admin-key", help="an operator key (default QNET_ADMIN_KEY, else --key)")
    return top


_LOCAL_COMMANDS = {"keys", "admin"}


def main(argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            args = parser().parse_args(argv)
    except SystemExit as exit_:
        return USAGE if exit_.code not in (0, None) else OK
    for name, default in (("url", None), ("key", None), ("json", False), ("timeout", 90.0)):
        if not hasattr(args, name):
            setattr(args, name, default)
    output = Output(args.json, out, err)
    try:
        client = None if args.command in _LOCAL_COMMANDS else Client(args.url, args.key, timeout=args.timeout)
        if client is not None and not client.config.api_key:
            raise UsageError("no API key: pass --key or set QNET_API_KEY (make api-key prints one)", AUTH)
        return args.handler(client, args, output)
    except UsageError as error:
        return _fail(output, error.exit_code, "USAGE" if error.exit_code == USAGE else "FILE_NOT_FOUND", 0,
                     str(error))
    except QnetError as error:
        return _fail(output, exit_code_of(error), error.code, error.status, error.message)
    except (ValueError, ImportError) as error:
        return _fail(output, USAGE, "USAGE", 0, str(error))
    except KeyboardInterrupt:
        err.write("\ninterrupted\n")
        return INTERRUPTED


def _fail(output: Output, exit_code: int, code: str, status: int, message: str) -> int:
    if output.as_json:
        json.dump({"success": False, "error": {"code": code, "status": status, "message": message,
                                               "exit_code": exit_code}}, output.out)
        output.out.write("\n")
    else:
        output.err.write(f"qnet: {code}" + (f" ({status})" if status else "") + f": {message}\n")
    return exit_code


def entry() -> None:
    """The console script."""
    sys.exit(main())


if __name__ == "__main__":
    entry()
