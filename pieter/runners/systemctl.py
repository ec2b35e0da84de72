"""Asking systemd about a job's unit, `pieter-job-<id>.service`, with `systemctl` (the runner, the collector)."""

from pieter.processes import output

ACTIVE = ("active", "activating", "deactivating", "reloading")  # ActiveStates of a unit whose processes may run


def unit_name(job_id: int) -> str:
    return f"pieter-job-{job_id}.service"


async def unit_state(unit: str) -> str:
    """The unit's ActiveState while it is loaded, '' once it is gone. Asks for loaded units only:
    `systemctl show` of a gone unit would make systemd try to load it, and log that it cannot."""
    rc, out = await output("systemctl", "list-units", "--all", "--plain", "--no-legend", unit)
    fields = out.split()
    return fields[2] if rc == 0 and len(fields) > 2 and fields[0] == unit else ""


async def unit_property(unit: str, name: str) -> str:
    """A property of a loaded unit ('' when the unit is gone: systemd then answers with defaults)."""
    rc, out = await output("systemctl", "show", "--property", f"LoadState,{name}", unit)
    values = dict(line.partition("=")[::2] for line in out.splitlines())  # in systemd's order, not ours
    return values.get(name, "") if rc == 0 and values.get("LoadState") == "loaded" else ""
