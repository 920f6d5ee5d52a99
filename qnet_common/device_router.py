"""Calls to the devices, routed by device id to a live backends replica that serves it (the registry says which).

The one routing rule of the mesh, used by the scheduler and the network service. Any number of backends
replicas, any split of devices between them: a device served by several replicas gets each new task on the
least loaded one (queue figures from the last listing plus the tasks this process sent since), and a replica
that stops answering is skipped until the registry drops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import grpc
from qnet.backends.v1 import backend_service_pb2_grpc as bs_grpc
from qnet.backends.v1 import backends_pb2
from qnet.backends.v1 import device_service_pb2 as ds
from qnet.backends.v1 import device_service_pb2_grpc as ds_grpc

from qnet_common import errors
from qnet_common.coalesce import Coalesced
from qnet_common.device_status import StatusStore
from qnet_common.grpcclient import channel, to_qnet_error
from qnet_common.registry import LEASE_S, Instance, Registry

log = logging.getLogger(__name__)

T = TypeVar("T")

#: The registry is read again when the copy in hand is older than this.
REGISTRY_TTL_S = 0.5
#: The merged device list is reused this long (queue figures move fast, descriptions do not).
LIST_TTL_S = 0.25
LIST_TIMEOUT_S = 5.0
#: Replicas whose registration lapsed this recently are asked too (briefly): see DeviceRouter._lapsed.
LAPSED_PROBE_S = 60.0
LAPSED_TIMEOUT_S = 1.0
ASSESS_TIMEOUT_S = 60.0


class _Replica:
    def __init__(self, address: str, service_key: str) -> None:
        self.address = address
        # One replica, addressed on purpose: no health-based balancing (a draining replica must still answer
        # for the tasks it runs).
        self.channel = channel(address, service_key, balanced=False)
        self.devices = ds_grpc.DeviceServiceStub(self.channel)
        self.backends = bs_grpc.BackendServiceStub(self.channel)
        #: Tasks sent by this process and not yet seen ending.
        self.in_flight = 0


class DeviceRouter:
    def __init__(self, registry: Registry, service_key: str, statuses: StatusStore) -> None:
        self._registry = registry
        #: The statuses operators set, as stored (concurrent readers share one read begun after they asked).
        self._stored = Coalesced(lambda: asyncio.to_thread(statuses.load))
        self._service_key = service_key
        self._replicas: dict[str, _Replica] = {}
        self._instances: list[Instance] = []
        self._read_at = float("-inf")
        self._reading: asyncio.Task | None = None
        self._listed: tuple[float, list[backends_pb2.Backend]] | None = None
        self._listings = {fresh: Coalesced(functools.partial(self._list_devices, fresh)) for fresh in (False, True)}
        #: Load per (address, device) from the last listing: tasks queued and running there.
        self._load: dict[tuple[str, str], int] = {}
        self._turn = itertools.count()
        #: When a replica last failed to answer: it is passed over until its registration lapses or it answers.
        self._unreachable: dict[str, float] = {}
        #: When a replica last answered.
        self._answered: dict[str, float] = {}

    # --- the registry ------------------------------------------------------------------------------------

    async def _refresh(self, *, fresh: bool = False) -> list[Instance]:
        if fresh or time.monotonic() - self._read_at > REGISTRY_TTL_S:
            if self._reading is None or self._reading.done():
                self._reading = asyncio.ensure_future(asyncio.to_thread(self._registry.instances))
            try:
                self._instances = [i for i in await asyncio.shield(self._reading) if i.service == "backends"]
                self._read_at = time.monotonic()
            except errors.Unavailable:  # the database is down: route by the last registry read
                log.warning("registry unreadable; routing by the copy read %.0f s ago",
                            time.monotonic() - self._read_at)
        return self._instances

    def _live(self) -> list[Instance]:
        """Replicas with a current registration, and those whose registration lapsed while they kept answering
        (renewals fail while the database is down: that is an outage, not a death). A replica that drained
        (deregistered) is out at once."""
        now, clock = time.time(), time.monotonic()
        # A replica restarted on the same address registers anew: the newest registration of an address wins.
        latest = {i.address: i for i in self._instances}  # oldest first, so later ones replace earlier ones
        return [i for i in latest.values()
                if i.live(now) or (not i.drained and clock - self._answered.get(i.address, -LEASE_S) < LEASE_S)]

    def _lapsed(self) -> list[Instance]:
        """Replicas whose registration lapsed in the last LAPSED_PROBE_S without a drain, and that have not just
        failed to answer: after a database outage every registration has lapsed until the next renewal, so the
        device list asks these too, and each that answers is live again."""
        now, clock = time.time(), time.monotonic()
        live = {i.address for i in self._live()}
        latest = {i.address: i for i in self._instances}
        return [i for i in latest.values()
                if i.address not in live and not i.drained and now - i.expires_at < LAPSED_PROBE_S
                and clock - self._unreachable.get(i.address, -LEASE_S) >= LEASE_S]

    def _replica(self, address: str) -> _Replica:
        replica = self._replicas.get(address)
        if replica is None:
            replica = self._replicas[address] = _Replica(address, self._service_key)
        return replica

    async def known(self) -> list[str]:
        """Every device registered recently, served now or not, in registration order."""
        await self._refresh()
        return list(dict.fromkeys(d for i in self._instances for d in i.devices))

    async def serving(self, device_id: str, *, exclude: Sequence[str] = ()) -> list[str]:
        """Addresses of live replicas serving the device, least loaded first."""
        await self._refresh()
        addresses = [i.address for i in self._live() if device_id in i.devices and i.address not in exclude]
        turn = next(self._turn)
        # Rotating before a stable sort spreads equal loads over the replicas in turn.
        if addresses:
            shift = turn % len(addresses)
            addresses = addresses[shift:] + addresses[:shift]
        now = time.monotonic()
        return sorted(addresses, key=lambda a: (now - self._unreachable.get(a, -LEASE_S) < LEASE_S,
                                                self._load.get((a, device_id), 0) + self._replica(a).in_flight))

    async def _pick(self, device_id: str) -> _Replica:
        addresses = await self.serving(device_id)
        if not addresses:  # perhaps a replica that joined since the last read
            await self._refresh(fresh=True)
            addresses = await self.serving(device_id)
        if not addresses:
            if device_id not in await self.known():
                raise self._not_found(device_id, await self.known())
            raise errors.BackendUnavailable(f"no live backends replica serves {device_id} right now; retry",
                                            backend=device_id)
        return self._replica(addresses[0])

    @staticmethod
    def _not_found(device_id: str, known: Sequence[str]) -> errors.BackendNotFound:
        return errors.BackendNotFound(
            f"backend {device_id!r} not found; known backends: {', '.join(sorted(known))}", backend=device_id)

    # --- calls -------------------------------------------------------------------------------------------

    async def list_devices(self, *, fresh: bool = False) -> list[backends_pb2.Backend]:
        """Every known device with its coupling map; one served by no live replica is reported offline.
        `fresh`: listed after the call (never older); else within LIST_TTL_S. Concurrent callers share one
        listing (qnet_common/coalesce.py)."""
        if not fresh and self._listed and time.monotonic() - self._listed[0] < LIST_TTL_S:
            return self._listed[1]
        return await self._listings[fresh].get()

    async def devices_as_stored(self) -> list[backends_pb2.Backend]:
        """The devices within LIST_TTL_S (descriptions, queues, which replicas answer), each served one with its
        status as the shared store has it when the call began or later: an operator's change made before the
        call is in the answer, without asking every replica (a status page's read). While the store cannot be
        read, the statuses the replicas last read stand."""
        devices, stored = await asyncio.gather(self.list_devices(), self._stored_statuses())
        # A device no replica answered for is listed bare (no qubits) and offline, whatever is stored for it.
        return [_with_status(d, stored[d.id]) if d.num_qubits and stored.get(d.id, d.status) != d.status else d
                for d in devices]

    async def _stored_statuses(self) -> dict[str, str]:
        try:
            return await self._stored.get()
        except errors.Unavailable:
            return {}

    async def _list_devices(self, fresh: bool) -> list[backends_pb2.Backend]:
        now = time.monotonic()
        await self._refresh(fresh=fresh)
        live = self._live()
        lapsed = self._lapsed()
        answers = await asyncio.gather(
            *(self._call(self._replica(i.address).devices.ListDevices, ds.ListDevicesRequest(), LIST_TIMEOUT_S,
                         i.address)
              for i in live),
            *(self._call(self._replica(i.address).devices.ListDevices, ds.ListDevicesRequest(), LAPSED_TIMEOUT_S,
                         i.address)
              for i in lapsed),
            return_exceptions=True,
        )
        lapsed_answers = answers[len(live):]
        answers = answers[:len(live)]
        for instance, answer in zip(lapsed, lapsed_answers, strict=True):
            if not isinstance(answer, BaseException):  # alive after all (it has been marked as answering)
                live.append(instance)
                answers.append(answer)
        merged: dict[str, backends_pb2.Backend] = {}
        load: dict[tuple[str, str], int] = {}
        reached = False
        for instance, answer in zip(live, answers, strict=True):
            if isinstance(answer, BaseException):
                log.warning("backends replica %s did not list its devices: %s", instance.address, answer)
                continue
            reached = True
            for device in answer.devices:
                load[(instance.address, device.id)] = device.queue_depth + device.running
                found = merged.get(device.id)
                if found is None:
                    merged[device.id] = device
                else:  # one device on several replicas: their queues add up; a task goes to the shortest
                    found.queue_depth += device.queue_depth
                    found.running += device.running
                    found.estimated_wait_s = min(found.estimated_wait_s, device.estimated_wait_s)
        if not reached and live:
            raise errors.BackendUnavailable("no backends replica could be reached; retry in a few seconds")
        self._load = load
        devices = [merged.get(d) or backends_pb2.Backend(id=d, name=d, status="offline")
                   for d in await self.known()]
        self._listed = (now, devices)
        return devices

    async def assess(self, device_ids: Sequence[str], qasm: str, shots: int) -> dict[str, ds.CircuitAssessment]:
        """Assessments of the devices a replica could be reached for; INVALID_QASM and the like propagate."""
        groups: dict[str, list[str]] = {}
        for device_id in device_ids or await self.known():
            try:
                replica = await self._pick(device_id)
            except errors.BackendUnavailable:
                continue  # no replica now: the device is simply not assessed (not runnable)
            groups.setdefault(replica.address, []).append(device_id)
        answers = await asyncio.gather(
            *(self._call(self._replica(a).devices.AssessCircuit,
                         ds.AssessCircuitRequest(device_ids=ids, qasm=qasm, shots=shots), ASSESS_TIMEOUT_S, a)
              for a, ids in groups.items()),
            return_exceptions=True,
        )
        result: dict[str, ds.CircuitAssessment] = {}
        for answer in answers:
            if isinstance(answer, errors.QnetError) and not answer.transient:
                raise answer
            if isinstance(answer, BaseException):
                log.warning("assessment skipped: %s", answer)
                continue
            result.update((a.device_id, a) for a in answer.assessments)
        return result

    async def submit(self, device_id: str, qasm: str, shots: int, task_id: str, *,
                     wait_s: float = 0.0) -> tuple[str, ds.Task]:
        """Queues a task on a replica serving the device, waiting up to `wait_s` for it to end; returns that
        replica's address and the task."""
        replica = await self._pick(device_id)
        request = ds.SubmitTaskRequest(device_id=device_id, qasm=qasm, shots=shots, task_id=task_id, wait_s=wait_s)
        task = await self._call(replica.devices.SubmitTask, request, 30.0 + wait_s, replica.address)
        if task.status not in ("completed", "failed"):
            replica.in_flight += 1
        return replica.address, task

    async def get_task(self, address: str, task_id: str, wait_s: float) -> ds.Task:
        """The task as the replica at `address` has it, after waiting up to `wait_s` for it to end."""
        replica = self._replica(address)
        task = await self._call(replica.devices.GetTask, ds.GetTaskRequest(task_id=task_id, wait_s=wait_s),
                                wait_s + 10.0, address)
        if task.status in ("completed", "failed"):
            replica.in_flight = max(0, replica.in_flight - 1)
        return task

    async def find_task(self, device_id: str, task_id: str) -> tuple[str, ds.Task] | None:
        """The task with this id as the live replica serving the device that knows it has it, with that replica's
        address: a caller that died after submitting it may not have recorded where it went. None when none
        knows it (a replica that cannot be reached now is not waited for: a dead one lost its tasks)."""
        async def ask(address: str) -> tuple[str, ds.Task] | None:
            request = ds.GetTaskRequest(task_id=task_id, wait_s=0.0)
            with contextlib.suppress(errors.QnetError):  # TASK_NOT_FOUND, or unreachable
                return address, await self._call(self._replica(address).devices.GetTask, request, 5.0, address)
            return None

        found = await asyncio.gather(*(ask(a) for a in await self.serving(device_id)))
        return next((f for f in found if f is not None), None)

    async def cancel(self, address: str, task_id: str) -> None:
        # A replica that cannot be reached has lost its task anyway.
        with contextlib.suppress(errors.QnetError):
            await self._call(self._replica(address).devices.CancelTask, ds.CancelTaskRequest(task_id=task_id), 5.0)

    async def on_device(self, device_id: str, call: Callable[[bs_grpc.BackendServiceStub], Awaitable[T]]) -> T:
        """Runs `call` with the BackendService of a replica serving the device (the public reads)."""
        replica = await self._pick(device_id)
        try:
            return await call(replica.backends)
        except grpc.aio.AioRpcError as error:
            raise to_qnet_error(error) from None

    def invalidate(self) -> None:
        """Forgets the cached device list (a device's status changed somewhere)."""
        self._listed = None

    async def set_status(self, device_id: str, status: str) -> backends_pb2.Backend:
        replica = await self._pick(device_id)
        reply = await self._call(replica.devices.SetDeviceStatus,
                                 ds.SetDeviceStatusRequest(device_id=device_id, status=status), 10.0)
        self._listed = None
        return reply.device

    async def _call(self, method: Callable, request: object, timeout: float, address: str = ""):
        try:
            reply = await method(request, timeout=timeout)
        except grpc.aio.AioRpcError as error:
            if address and error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                self._unreachable[address] = time.monotonic()
            raise to_qnet_error(error) from None
        if address:
            self._unreachable.pop(address, None)
            self._answered[address] = time.monotonic()
        return reply

    async def close(self) -> None:
        for replica in self._replicas.values():
            await replica.channel.close()


def _with_status(device: backends_pb2.Backend, status: str) -> backends_pb2.Backend:
    changed = backends_pb2.Backend()
    changed.CopyFrom(device)
    changed.status = status
    return changed
