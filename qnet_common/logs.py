"""Structured key=value logging, configured once per process."""

from __future__ import annotations

import logging
import sys


class KeyValueFormatter(logging.Formatter):
    """Formats `ts=... level=... logger=... msg="..."` plus any `extra` keys."""

    _reserved = set(vars(logging.LogRecord("", 0, "", 0, "", None, None)))

    def format(self, record: logging.LogRecord) -> str:
        fields = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "service": getattr(record, "service", _service),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in self._reserved and key not in fields and not key.startswith("_"):
                fields[key] = value
        line = " ".join(f"{k}={_quote(v)}" for k, v in fields.items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def _quote(value: object) -> str:
    text = str(value)
    return f'"{text}"' if (" " in text or not text) else text


_service = "qnet"


def configure(service: str, level: str = "INFO") -> None:
    global _service
    _service = service
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(KeyValueFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # The vendor SDKs log every compiler pass at INFO: only their warnings are ours to see.
    for noisy in ("qiskit", "qiskit_aer", "qiskit_ibm_runtime", "braket", "pyquil", "stevedore", "urllib3"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
