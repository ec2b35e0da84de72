"""Asking systemd about a job's unit, `pieter-job-<id>.service`: over D-Bus, on one connection to the system bus.

Not `systemctl`: a process per question costs about 8 ms of CPU, and the runner asks about each running job every
half second (8 jobs that only sleep cost 9 % of a core that way). python3-dbus-next (Debian's) because it is
asyncio-native and pure Python; it needs the system bus (package dbus), which systemd's own tools use too.
"""

import asyncio
from typing import Any

from dbus_next.aio.message_bus import MessageBus
from dbus_next.constants import BusType, MessageType
from dbus_next.message import Message

SYSTEMD = "org.freedesktop.systemd1"
MANAGER_PATH = "/org/freedesktop/systemd1"
MANAGER = "org.freedesktop.systemd1.Manager"
UNIT = "org.freedesktop.systemd1.Unit"
PROPERTIES = "org.freedesktop.DBus.Properties"
NO_SUCH_UNIT = "org.freedesktop.systemd1.NoSuchUnit"
ACTIVE = ("active", "activating", "deactivating", "reloading")  # ActiveStates of a unit whose processes may run


class SystemdError(Exception):
    """systemd (or the bus) refused a call; the message says which and why."""


def unit_name(job_id: int) -> str:
    return f"pieter-job-{job_id}.service"


class Manager:
    """systemd's manager, asked over one bus connection, opened on first use and again after the bus went away."""

    def __init__(self) -> None:
        self._bus: MessageBus | None = None
        self._connecting = asyncio.Lock()

    async def bus(self) -> MessageBus:
        async with self._connecting:
            if self._bus is None or not self._bus.connected:
                self._bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
            return self._bus

    async def call(self, path: str, interface: str, member: str, signature: str = "", body: list[Any] | None = None,
                   none_if: str = "") -> list[Any] | None:  # fmt: skip
        """A method call's reply body; None when systemd answers with the error `none_if`."""
        bus = await self.bus()
        reply = await bus.call(Message(destination=SYSTEMD, path=path, interface=interface, member=member,
                                       signature=signature, body=body or []))  # fmt: skip
        assert reply is not None  # a method call (not NO_REPLY_EXPECTED) always gets one
        if reply.message_type == MessageType.ERROR:
            if reply.error_name == none_if:
                return None
            raise SystemdError(f"{interface}.{member}: {reply.error_name}: {reply.body[0] if reply.body else ''}")
        return list(reply.body)

    async def unit_property(self, unit: str, name: str) -> Any:
        """A property of a loaded unit (None once it is gone). GetUnit first: asking a gone unit's object for a
        property would make systemd load it again, and log that it cannot."""
        found = await self.call(MANAGER_PATH, MANAGER, "GetUnit", "s", [unit], none_if=NO_SUCH_UNIT)
        if found is None:
            return None
        interface = UNIT if name in ("ActiveState", "InvocationID") else f"{SYSTEMD}.Service"
        value = await self.call(found[0], PROPERTIES, "Get", "ss", [interface, name], none_if=NO_SUCH_UNIT)
        return value[0].value if value is not None else None

    async def unit_state(self, unit: str) -> str:
        """The unit's ActiveState while it is loaded, '' once it is gone."""
        return str(await self.unit_property(unit, "ActiveState") or "")

    async def invocation(self, unit: str) -> str:
        """The id of the unit's current run ('' before it starts, and once it is gone)."""
        found = await self.unit_property(unit, "InvocationID")
        return bytes(found).hex() if found else ""

    async def control_group(self, unit: str) -> str:
        return str(await self.unit_property(unit, "ControlGroup") or "")

    async def stop(self, unit: str) -> None:
        """Stop the unit (without waiting for it to be stopped)."""
        await self.call(MANAGER_PATH, MANAGER, "StopUnit", "ss", [unit, "replace"])

    async def start_transient(self, unit: str, properties: list[list[Any]]) -> None:
        """Start a transient service with these properties (without waiting for it to be started)."""
        await self.call(MANAGER_PATH, MANAGER, "StartTransientUnit", "ssa(sv)a(sa(sv))",
                        [unit, "fail", properties, []])  # fmt: skip

    def close(self) -> None:
        if self._bus is not None:
            self._bus.disconnect()  # type: ignore[no-untyped-call]  # dbus-next 0.2.3 leaves it unannotated
            self._bus = None
