"""Running one benchmark scenario the way every focused benchmark does: the
gateway pinned to one core and the load generator and upstream to another
(when there are two), then the machine line and the table."""

from __future__ import annotations

import datetime
import os
import platform
import sys
from collections.abc import Callable

from .__main__ import Row, table
from .processes import Lab, Proc, cpus, lab, pin_self

__all__ = ["Scenario", "run_pinned"]

# (lab, upstream, the gateway's CPU, the other CPU) -> the table's rows
Scenario = Callable[[Lab, Proc, int | None, int | None], list[Row]]


def run_pinned(command: str, header: Row, scenario: Scenario, *, pin: bool = True,
               others: str = "load+upstream") -> None:
    """Run ``scenario`` against a fresh upstream and print its table, headed by
    the machine, the pinning and ``python -m <command>`` with its arguments."""
    available = cpus()
    pin = pin and len(available) >= 2
    gateway_cpu, other_cpu = (available[0], available[-1]) if pin else (None, None)
    pin_self(other_cpu)
    with lab() as the_lab:
        upstream = the_lab.upstream(cpu=other_cpu)
        rows = scenario(the_lab, upstream, gateway_cpu, other_cpu)
    pinned = f"gateway on CPU {gateway_cpu}, {others} on CPU {other_cpu}" if pin else "no"
    print(f"\n{datetime.date.today().isoformat()}, {os.cpu_count()} CPUs, Python "
          f"{platform.python_version()}, {platform.platform()}; pinned: {pinned}; "
          f"command: python -m {command} {' '.join(sys.argv[1:])}\n")
    print(table(header, rows))
