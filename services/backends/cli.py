"""Operators' CLI: set a backend online, in maintenance or offline.

    python -m services.backends.cli set-status rigetti_aspen maintenance --key $QNET_ADMIN_KEY
"""

from __future__ import annotations

import argparse
import os
import sys

import grpc
from qnet.backends.v1 import device_service_pb2 as ds
from qnet.backends.v1 import device_service_pb2_grpc as ds_grpc

from qnet_common.settings import default_address
from services.backends.domain.device import DEVICE_STATUSES


def main(argv: list[str] | None = None) -> int:
    # The connection options are accepted before or after the subcommand (`set-status ... --key K` works).
    connection = argparse.ArgumentParser(add_help=False)
    connection.add_argument("--address", default=argparse.SUPPRESS,
                            help=f"any backends replica (default QNET_BACKENDS_ADDR or {default_address('backends')})")
    connection.add_argument("--key", default=argparse.SUPPRESS, help="an operator API key (default QNET_ADMIN_KEY)")
    parser = argparse.ArgumentParser(prog="python -m services.backends.cli", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter, parents=[connection])
    parser.set_defaults(address=os.environ.get("QNET_BACKENDS_ADDR", default_address("backends")),
                        key=os.environ.get("QNET_ADMIN_KEY", ""))
    commands = parser.add_subparsers(dest="command", required=True)
    status = commands.add_parser("set-status", help="change a backend's status", parents=[connection])
    status.add_argument("backend")
    status.add_argument("status", choices=DEVICE_STATUSES)
    args = parser.parse_args(argv)
    with grpc.insecure_channel(args.address) as channel:
        stub = ds_grpc.DeviceServiceStub(channel)
        try:
            reply = stub.SetDeviceStatus(
                ds.SetDeviceStatusRequest(device_id=args.backend, status=args.status),
                metadata=(("authorization", f"Bearer {args.key}"),), timeout=10,
            )
        except grpc.RpcError as error:
            print(f"error: {error.code().name}: {error.details()}", file=sys.stderr)
            return 1
    print(f"{reply.device.id} is now {reply.device.status}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
