"""Each adapter implements its whole port: every method the engine may call, with the same parameters. A
method missing from an adapter (DeviceClient.cancel once sat, unreachable, inside another function) fails only
when the engine first calls it, in the fault path that no quick run reaches."""

from __future__ import annotations

import inspect

import pytest

from services.scheduler.adapters.clients import AggregatorClient, DeviceClient
from services.scheduler.domain.ports import Aggregator, Devices


def port_methods(port: type) -> dict[str, inspect.Signature]:
    return {name: inspect.signature(member) for name, member in vars(port).items()
            if inspect.isfunction(member) and not name.startswith("_")}


@pytest.mark.parametrize(("port", "adapter"), [(Devices, DeviceClient), (Aggregator, AggregatorClient)])
def test_the_adapter_has_every_method_of_its_port_with_its_parameters(port, adapter):
    methods = port_methods(port)
    assert methods, port
    for name, wanted in methods.items():
        implemented = getattr(adapter, name, None)
        assert implemented is not None, f"{adapter.__name__} lacks {port.__name__}.{name}"
        assert inspect.iscoroutinefunction(implemented), f"{adapter.__name__}.{name} is not async"
        found = inspect.signature(implemented)
        assert [(p.name, p.kind, p.default) for p in found.parameters.values()] == [
            (p.name, p.kind, p.default) for p in wanted.parameters.values()], f"{adapter.__name__}.{name}{found}"
