"""Operators' CLI: set a backend online, in maintenance or offline.

    python -m services.backends.cli set-status rigetti_aspen maintenance --key $QNET_ADMIN_KEY
"""

from __future__ import annotations

import argparse
import sys

import grpc
from qnet.backends.v1 import device_service_pb2 as ds
from qnet.backends.v1 import device_service_pb2_grpc as ds_grpc

from qnet_common.settings import OperatorCliSettings, default_address
from services.backends.domain.device import DEVICE_STATUSES


def main(argv: list[str] | None = None) -> int:
    # The connection options are accepted before or after the subcommand (`set-status ... --key K` works).
    connection = argparse.ArgumentParser(add_help=False)
    connection.add_argument("--address", default=argparse.SUPPRESS,
                            help=f"any backends replica (default QNET_BACKENDS_ADDR or {default_address('backends')})")
    connection.add_argument("--key", default=argparse.SUPPRESS, help="an operator API key (default QNET_ADMIN_KEY)")
    parser = argparse.ArgumentParser(prog="python -m services.backends.cli", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter, parents=[connection])
    commands = parser.add_subparsers(dest="command", required=True)
    status = commands.add_parser("set-status", help="change a backend's status", parents=[connection])
    status.add_argument("backend")
    status.add_argument("status", choices=DEVICE_STATUSES)
    args = parser.parse_args(argv)
    # Defaults filled in here: parser.set_defaults would also change the shared actions' defaults, and the
    # subcommand's parse would then reset an option given before the subcommand.
    settings = OperatorCliSettings.from_env()
    args.address = getattr(args, "address", None) or settings.backends_addr
    args.key = getattr(args, "key", None) or settings.admin_key
    try:
        device = set_status(args.address, args.key, args.backend, args.status)
    except grpc.RpcError as error:
        print(f"error: {error.code().name}: {error.details()}", file=sys.stderr)
        return 1
    print(f"{device.id} is now {device.status}")
    return 0


def set_status(address: str, key: str, backend: str, status: str, timeout: float = 10):
    """Sets a device's status through any backends replica; returns the device. Raises grpc.RpcError.
    Also used by `qnet admin backend set-status`."""
    with grpc.insecure_channel(address) as channel:
        reply = ds_grpc.DeviceServiceStub(channel).SetDeviceStatus(
            ds.SetDeviceStatusRequest(device_id=backend, status=status),
            metadata=(("authorization", f"Bearer {key}"),), timeout=timeout,
        )
    return reply.device


if __name__ == "__main__":
    sys.exit(main())
