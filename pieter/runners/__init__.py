"""Runners run one job each; `base.py` is the protocol both implement. `pick()` chooses the one in force."""

from pieter.config import Config
from pieter.runners.base import Runner
from pieter.store import Store
from pieter.units import systemd_booted


def pick(config: Config, store: Store) -> Runner:
    """`PIETER_RUNNER=auto` takes the systemd runner on a host booted with systemd, else the local one."""
    from pieter.runners.local import LocalRunner

    if config.runner == "systemd" or (config.runner == "auto" and systemd_booted()):
        from pieter.runners.systemd import SystemdRunner

        return SystemdRunner(config, store)
    return LocalRunner(config)
