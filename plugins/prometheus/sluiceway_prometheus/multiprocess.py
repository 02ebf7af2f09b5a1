"""prometheus_client's multiprocess mode, for ``sluiceway serve --workers N``.

Each worker is a process with its own gateway and its own counters. For a scrape
that lands on any one of them to report the totals of all, prometheus_client
keeps every metric value in a memory-mapped file per process, in the directory
that ``PROMETHEUS_MULTIPROC_DIR`` names, and the scraped worker sums the files.

prometheus_client decides between in-memory values and files **once, when
``prometheus_client.values`` is first imported**: in ``sluiceway serve`` that is
in the supervising process, when it loads the plugins, before it forks the
workers, which inherit that decision. So the variable must be in the
environment before the process starts; setting it later has no effect, and
:func:`multiprocess_dir` refuses that instead of silently reporting per-worker
numbers.
"""

from __future__ import annotations

import contextlib
import os

from prometheus_client import values

from sluiceway.api import StartupError

__all__ = ["ENV", "multiprocess_dir", "remove_stale_files"]

ENV = "PROMETHEUS_MULTIPROC_DIR"


def _client_is_multiprocess() -> bool:
    return bool(getattr(values.ValueClass, "_multiprocess", False))


def multiprocess_dir(workers: int) -> str | None:
    """The directory of multiprocess mode, or ``None`` for one process.

    Raises :class:`~sluiceway.StartupError` when the counts would be wrong: several
    workers and no directory, a variable set after prometheus_client chose its
    mode, or a directory that is missing or not writable."""
    path = os.environ.get(ENV) or None
    client = _client_is_multiprocess()
    if path is not None and not client:
        raise StartupError(
            f"prometheus: {ENV} is set, but prometheus_client was imported before it was"
            " and keeps its metrics in this process's memory; set the variable in the"
            " environment that starts the gateway (`PROMETHEUS_MULTIPROC_DIR=/path"
            " sluiceway serve ...`), not from Python"
        )
    if path is None and client:
        raise StartupError(
            f"prometheus: prometheus_client is in multiprocess mode but {ENV} is no longer"
            " set; set it for the whole life of the process"
        )
    if path is None:
        if workers > 1:
            raise StartupError(
                f"prometheus: with {workers} workers, each worker counts only its own"
                f" requests; set {ENV} to an empty directory that the gateway can write"
                " (for example `mkdir -p /run/sluiceway-metrics && PROMETHEUS_MULTIPROC_DIR="
                "/run/sluiceway-metrics sluiceway serve --workers"
                f" {workers}`) so that every scrape reports the totals of all workers"
            )
        return None
    if not os.path.isdir(path):
        raise StartupError(
            f"prometheus: {ENV}={path!r} is not a directory; create it (empty) before"
            " starting the gateway"
        )
    if not os.access(path, os.W_OK | os.X_OK):
        raise StartupError(f"prometheus: {ENV}={path!r} is not writable by the gateway")
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True


def remove_stale_files(path: str) -> list[str]:
    """Delete the files of processes that no longer run, and any file with this
    process's own id (left by an earlier process that had the same id: a gateway
    process builds one gateway, before it has written any file). Returns the
    names removed.

    Files are named ``<type>[_<mode>]_<pid>.db``. A counter of a worker that is
    gone would otherwise be added to the totals forever, and a stale gauge file
    with a reused process id would be read back as the new process's value."""
    removed = []
    own = os.getpid()
    for name in sorted(os.listdir(path)):
        stem, dot, ext = name.rpartition(".")
        pid = stem.rpartition("_")[2]
        if not dot or ext != "db" or not pid.isdecimal():
            continue
        if int(pid) == own or not _alive(int(pid)):
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(path, name))
                removed.append(name)
    return removed
