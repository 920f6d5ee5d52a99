"""Prints the pinned requirements of an image from the project's own pyproject.toml (stdlib only: runs in a build
stage before anything is installed).

    python requirements.py ibm          # the core dependencies and the `ibm` extra's
    python requirements.py              # the core dependencies only (the services image)
    python requirements.py --no-core gateway   # the `gateway` extra alone (the Envoy image)
    python requirements.py --tools      # what `make protos` needs (scripts/gen_protos.py)
    python requirements.py --freeze     # constraints.txt: every image's packages with the versions installed here

The build stages install with `-c constraints.txt`, so that the packages the pins pull in are pinned too, at the
versions `make test` ran with. Regenerate it after changing pyproject.toml (in the project's venv):
`.venv/bin/python deploy/docker/requirements.py --freeze > deploy/docker/constraints.txt`.

An extra that names the project itself (`all = ["qnet[ibm,...]"]`) is expanded. pyproject.toml is read from
beside this file (a build stage copies both into one folder) or else from the repository root.
"""

from __future__ import annotations

import argparse
import pathlib
import re
import sys
import tomllib

HERE = pathlib.Path(__file__).resolve().parent
#: The packages scripts/gen_protos.py imports (grpc_tools, google.api), pinned where pyproject pins them.
TOOLS = ("grpcio-tools", "googleapis-common-protos")


def pyproject() -> dict:
    for candidate in (HERE / "pyproject.toml", HERE.parent.parent / "pyproject.toml"):
        if candidate.exists():
            return tomllib.loads(candidate.read_text())
    raise SystemExit("requirements.py: no pyproject.toml beside it or at the repository root")


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def name_of(requirement: str) -> str:
    return normalize(re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0])


def requirements(extras: list[str], *, core: bool = True, project: dict | None = None) -> list[str]:
    """The requirement strings, in pyproject order, without duplicates; SystemExit names an unknown extra."""
    project = (project or pyproject())["project"]
    optional = project.get("optional-dependencies", {})
    own = normalize(project["name"])
    found: list[str] = list(project["dependencies"]) if core else []

    def add(extra: str, seen: tuple[str, ...] = ()) -> None:
        if extra not in optional:
            raise SystemExit(f"requirements.py: no extra {extra!r} in pyproject.toml; extras: {', '.join(optional)}")
        for requirement in optional[extra]:
            if name_of(requirement) == own:  # qnet[a,b]: the project's own extras
                inner = re.search(r"\[([^\]]*)\]", requirement)
                for name in (inner.group(1).split(",") if inner else []):
                    if name.strip() not in seen:
                        add(name.strip(), (*seen, extra))
            elif requirement not in found:
                found.append(requirement)

    for extra in extras:
        add(extra)
    return found


def tools(project: dict | None = None) -> list[str]:
    """The pins of TOOLS, wherever pyproject lists them (core or any extra)."""
    project = (project or pyproject())["project"]
    optional = project.get("optional-dependencies", {}).values()
    every = [*project["dependencies"], *(r for group in optional for r in group)]
    pins = {name_of(r): r for r in every if "==" in r}
    missing = [t for t in TOOLS if t not in pins]
    if missing:
        raise SystemExit(f"requirements.py: pyproject.toml pins none of {', '.join(missing)}")
    return [pins[t] for t in TOOLS]


def closure(requirement_strings: list[str]) -> dict[str, str]:
    """Every distribution these requirements install here (transitively, markers and extras evaluated), with its
    installed version: {normalized name: version}. Runs in the dev venv (needs `packaging`)."""
    import importlib.metadata as metadata

    from packaging.requirements import Requirement

    found: dict[str, str] = {}
    pending = [(Requirement(r), "") for r in requirement_strings]
    while pending:
        requirement, via_extra = pending.pop()
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": via_extra}):
            continue
        name = normalize(requirement.name)
        dist = metadata.distribution(name)
        for extra in requirement.extras:  # psycopg[binary]: the extra's own requirements too
            pending += [(Requirement(r), extra) for r in dist.requires or () if "extra ==" in r]
        if name in found:
            continue
        found[name] = dist.version
        pending += [(Requirement(r), "") for r in dist.requires or () if "extra ==" not in r]
    return found


def freeze(project: dict | None = None) -> list[str]:
    """The lines of constraints.txt: every image's packages (core, every extra but dev, the generator's tools)."""
    project = project or pyproject()
    extras = [e for e in project["project"].get("optional-dependencies", {}) if e != "dev"]
    pins = closure(requirements(extras, project=project) + tools(project))
    return [f"{name}=={version}" for name, version in sorted(pins.items())]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="requirements.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("extras", nargs="*", help="extras of pyproject.toml to add")
    parser.add_argument("--no-core", action="store_true", help="leave out the core dependencies")
    parser.add_argument("--tools", action="store_true", help="print the code generator's requirements instead")
    parser.add_argument("--freeze", action="store_true", help="print constraints.txt (in the project's venv)")
    args = parser.parse_args(argv)
    if args.freeze:
        lines = ["# Every image's packages at the versions `make test` ran with; regenerate with",
                 "# .venv/bin/python deploy/docker/requirements.py --freeze > deploy/docker/constraints.txt", *freeze()]
    else:
        lines = tools() if args.tools else requirements(args.extras, core=not args.no_core)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
