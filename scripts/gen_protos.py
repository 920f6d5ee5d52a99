"""Generates Python stubs into gen/ and Envoy's descriptor set gen/qnet.pb from protos/ (make protos)."""

from __future__ import annotations

import pathlib
import shutil
import sys

import grpc_tools
from grpc_tools import protoc

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
GEN = ROOT / "gen"


def _include_dirs() -> list[pathlib.Path]:
    """protos/, grpc_tools' well-known types and the googleapis protos shipped by googleapis-common-protos."""
    import google.api.annotations_pb2 as annotations

    site = pathlib.Path(annotations.__file__).resolve().parents[2]
    return [PROTOS, pathlib.Path(grpc_tools.__file__).parent / "_proto", site]


def main() -> int:
    sources = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    shutil.rmtree(GEN, ignore_errors=True)
    GEN.mkdir()
    includes = [f"-I{d}" for d in _include_dirs()]
    # google/rpc/error_details.proto rides along so Envoy can print ErrorInfo details.
    extra = ["google/rpc/error_details.proto", "google/rpc/status.proto"]
    args = ["protoc", *includes, f"--python_out={GEN}", f"--pyi_out={GEN}", f"--grpc_python_out={GEN}", *sources]
    if protoc.main(args) != 0:
        return 1
    descriptor = [
        "protoc",
        *includes,
        f"--descriptor_set_out={GEN / 'qnet.pb'}",
        "--include_imports",
        "--include_source_info",
        *sources,
        *extra,
    ]
    if protoc.main(descriptor) != 0:
        return 1
    for package in {p.parent for p in GEN.rglob("*_pb2.py")}:
        for parent in [package, *package.relative_to(GEN).parents]:
            init = GEN / parent / "__init__.py" if parent != package else package / "__init__.py"
            if init.parent != GEN and not init.exists():
                init.touch()
    print(f"generated {len(sources)} protos into {GEN.relative_to(ROOT)}/ and {GEN.name}/qnet.pb")
    return 0


if __name__ == "__main__":
    sys.exit(main())
