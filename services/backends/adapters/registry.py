"""Which devices exist and which adapter builds each; an adapter's SDK is imported only when one of its
devices is asked for, so a backends process for one provider does not load the others."""

from __future__ import annotations

import importlib
from collections.abc import Iterable

from services.backends.domain.device import Device

#: device id -> adapter module (each module has `devices(ids) -> dict[str, Device]`).
ADAPTERS = {
    "local_simulator": "services.backends.adapters.local",
    "ionq_simulator": "services.backends.adapters.ionq",
    "ionq_aria": "services.backends.adapters.ionq",
    "ibm_brisbane": "services.backends.adapters.ibm",
    "ibm_torino": "services.backends.adapters.ibm",
    "rigetti_aspen": "services.backends.adapters.rigetti",
}
DEVICE_IDS = tuple(ADAPTERS)
#: The providers, each one adapter module (ibm, ionq, rigetti, local), in the order their devices are listed.
PROVIDERS = tuple(dict.fromkeys(module.rpartition(".")[2] for module in ADAPTERS.values()))


def provider_of(device_id: str) -> str:
    """The provider whose adapter builds the device: its adapter module's name (see PROVIDERS)."""
    return ADAPTERS[device_id].rpartition(".")[2]


def devices_of(provider: str) -> tuple[str, ...]:
    """The ids of the devices one provider's adapter builds, in catalogue order."""
    return tuple(d for d in DEVICE_IDS if provider_of(d) == provider)


def build_devices(ids: Iterable[str] | None = None) -> dict[str, Device]:
    wanted = list(ids) if ids else list(DEVICE_IDS)
    unknown = [d for d in wanted if d not in ADAPTERS]
    if unknown:
        raise ValueError(f"unknown device ids {unknown}; known: {', '.join(DEVICE_IDS)}")
    built: dict[str, Device] = {}
    for module_name in dict.fromkeys(ADAPTERS[d] for d in wanted):
        module = importlib.import_module(module_name)
        built.update(module.devices(wanted))
    return {d: built[d] for d in wanted}
