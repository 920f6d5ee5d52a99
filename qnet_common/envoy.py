"""What the services and Envoy agree on: the metadata names, the error envelope and the bound on its message.

Envoy's config is rendered by qnet_common/envoy_config.py (its Lua tables by envoy_schema.py); the proxy is run
by envoy_process.py.
"""

from __future__ import annotations

import json

#: Trailing metadata with the ready HTTP error body; the Lua filter makes it the response body.
ENVELOPE_HEADER = "qnet-error-envelope"
#: Request metadata Envoy sets on every routed request: the address the client reached it at.
EDGE_HEADER = "x-qnet-edge"
#: Longest error message sent as metadata. It travels three times (grpc-message, grpc-status-details-bin and
#: the envelope), and Envoy resets a response whose headers pass 60 KiB: the client would get a 503 instead.
MAX_MESSAGE_CHARS = 4000
#: How a message cut to MAX_MESSAGE_CHARS ends.
TRUNCATED = " ... (truncated)"


def bounded_message(message: str) -> str:
    """`message`, or its first part marked as cut when it is longer than MAX_MESSAGE_CHARS (the one place)."""
    if len(message) <= MAX_MESSAGE_CHARS:
        return message
    return message[: MAX_MESSAGE_CHARS - len(TRUNCATED)] + TRUNCATED


def error_envelope(code: str, message: str) -> str:
    """The HTTP error body of the API, ASCII-only (non-ASCII as \\u escapes) so it can travel as metadata."""
    return json.dumps({"success": False, "error": {"code": code, "message": message}}, ensure_ascii=True)


def error_trailers(code: str, message: str) -> list[tuple[str, str]]:
    """The trailing metadata a gRPC server adds to its abort so that Envoy answers REST with the envelope.

    Add it next to grpc_status's `grpc-status-details-bin`; the HTTP status comes from the gRPC code. `message`
    is the one of the Status, already bounded (grpcserver.error_status cuts it with bounded_message).
    """
    return [(ENVELOPE_HEADER, error_envelope(code, message))]
