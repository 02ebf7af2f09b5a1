"""The writer thread: where lines are formatted, encoded and written.

The sink puts :class:`~.lines.Queued` items on a :class:`queue.SimpleQueue`
(a few hundred nanoseconds, never blocking); one thread per sink takes them
off, builds each JSON object, and hands the lines to an output: the logging
system (logger ``sluiceway.requests``) or a file. A full queue drops lines and
counts them; the thread then writes a ``log_dropped`` warning saying how many.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import stat
import threading
import time
from pathlib import Path
from typing import Protocol

import msgspec

from sluiceway.api import JSON_LINE

from .lines import LEVEL_NAMES, Queued, Timestamps, line_for

__all__ = ["FileOutput", "LoggingOutput", "Output", "Writer"]

# Lines written to the output in one go, at most.
_BATCH = 256
# A failing output is reported at most this often.
_REPORT_EVERY = 60.0
# A file is checked for having been moved away (logrotate) at most this often.
_REOPEN_CHECK_EVERY = 1.0
# After writing what was queued, the thread waits this long before looking again,
# so that lines are written in batches: a thread woken for every line would take
# the GIL from the event loop for every request, which costs more than the line.
_PAUSE = 0.05
# Paths that name a stream rather than a file of ours, even when they lead to one.
_STREAMS = ("/dev/", "/proc/")


class Output(Protocol):
    """Where the lines go. ``open`` runs at startup (its ``OSError`` stops the
    gateway); ``write`` and ``close`` run on the writer thread."""

    def open(self) -> None: ...

    def write(self, lines: list[tuple[int, bytes]]) -> None: ...

    def close(self) -> None: ...


class LoggingOutput:
    """Each line becomes the message of a record on ``logger`` at its level, so
    that the operator's logging configuration routes and formats it."""

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger

    def open(self) -> None:
        pass

    def write(self, lines: list[tuple[int, bytes]]) -> None:
        log = self.logger.log
        for level, data in lines:
            text = data.decode()
            # Under `--log-format json` the core's formatter writes the line as it is,
            # instead of quoting it inside another object.
            log(level, text, extra={JSON_LINE: text})

    def close(self) -> None:
        pass


class FileOutput:
    """JSON lines appended to a file, each batch in one ``write`` (so processes
    appending to the same file do not interleave within a line). A file moved
    away (by logrotate) is noticed within a second and a new one opened; with
    ``max_size`` the output rotates the file itself before a line would take it
    past that size: ``path`` becomes ``path.1``, ``path.1`` becomes ``path.2``...
    up to ``path.<keep>``. Rotating is for one process: with several writing to one
    file, leave it to logrotate."""

    def __init__(self, path: Path, max_size: int = 0, keep: int = 5) -> None:
        self.path = path
        self.max_size = max_size
        self.keep = keep
        self._fd = -1
        self._identity: tuple[int, int] | None = None  # (st_dev, st_ino) of a regular file
        self._size = 0  # the file's size, as far as this process knows
        self._checked = 0.0

    def open(self) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        info = os.fstat(fd)
        self._fd = fd
        # Only a regular file is watched for logrotate and rotated: never a pipe,
        # a terminal, or /dev/stdout (even when the shell sent it to a file).
        regular = stat.S_ISREG(info.st_mode) and not str(self.path).startswith(_STREAMS)
        self._identity = (info.st_dev, info.st_ino) if regular else None
        self._size = info.st_size
        self._checked = time.monotonic()

    def write(self, lines: list[tuple[int, bytes]]) -> None:
        if self._fd < 0:
            self.open()
        elif self._identity is not None:
            now = time.monotonic()
            if now - self._checked >= _REOPEN_CHECK_EVERY:
                self._checked = now
                self._reopen_if_moved()
        if not self.max_size or self._identity is None:
            self._append(b"".join(line + b"\n" for _, line in lines))
            return
        # Rotate before a line that would take the file past max_size.
        chunk: list[bytes] = []
        size = self._size
        for _, line in lines:
            if size + len(line) + 1 > self.max_size and size > 0:
                if chunk:
                    self._append(b"".join(chunk))
                    chunk = []
                self._rotate()
                size = self._size
            chunk.append(line + b"\n")
            size += len(line) + 1
        if chunk:
            self._append(b"".join(chunk))

    def _append(self, data: bytes) -> None:
        """One ``write`` (more only if the kernel takes part of it)."""
        self._size += len(data)
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view):]

    def _reopen_if_moved(self) -> None:
        try:
            info = os.stat(self.path)
            moved = (info.st_dev, info.st_ino) != self._identity
        except FileNotFoundError:
            moved = True
        if moved:
            self.close()
            self.open()

    def _rotate(self) -> None:
        self.close()
        for index in range(self.keep - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{index}")
            if older.exists():
                older.replace(self.path.with_name(f"{self.path.name}.{index + 1}"))
        with contextlib.suppress(FileNotFoundError):
            self.path.replace(self.path.with_name(f"{self.path.name}.1"))
        self.open()

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)


class Writer:
    """A queue and the thread that drains it into ``output``. ``put`` is what the
    event loop calls; everything else happens on the thread."""

    def __init__(self, output: Output, *, with_client: bool, max_queue: int) -> None:
        self.output = output
        self.with_client = with_client
        self.max_queue = max_queue
        self.queue: queue.SimpleQueue[Queued | None] = queue.SimpleQueue()
        self.dropped = 0  # incremented on the event loop only
        self.written = 0  # incremented on the writer thread only
        self._reported_drops = 0
        self._last_report = -_REPORT_EVERY
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._encode = msgspec.json.Encoder().encode
        self._timestamp = Timestamps()
        self._errors = logging.getLogger("sluiceway.request_log")

    def put(self, item: Queued) -> None:
        """Enqueue a line; never blocks. A full queue drops it (and counts it)."""
        if self.queue.qsize() >= self.max_queue:
            self.dropped += 1
            return
        self.queue.put(item)

    # -- lifecycle (the sink's lifespan) -------------------------------------

    def start(self) -> None:
        """Open the output and start the thread (blocking: call it off the loop)."""
        self.output.open()
        self._stopping.clear()
        thread = threading.Thread(target=self._run, name="sluiceway-request-log", daemon=True)
        self._thread = thread
        thread.start()

    def stop(self) -> None:
        """Write what is queued, stop the thread, close the output (blocking)."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stopping.set()
        self.queue.put(None)
        thread.join()

    # -- the thread ---------------------------------------------------------------

    def _run(self) -> None:
        try:
            while self._drain():
                self._stopping.wait(_PAUSE)
        finally:
            self._close()

    def _drain(self) -> bool:
        """Wait for a line, then write every line queued, in batches; ``False``
        once the stop sentinel is met."""
        get_nowait = self.queue.get_nowait
        batch: list[tuple[int, bytes]] = []
        item = self.queue.get()
        while True:
            if item is None:
                self._flush(batch)
                return False
            self._encode_into(batch, item)
            if len(batch) >= _BATCH:
                self._flush(batch)
                batch = []
            try:
                item = get_nowait()
            except queue.Empty:
                self._flush(batch)
                return True

    def _flush(self, batch: list[tuple[int, bytes]]) -> None:
        self._note_drops(batch)
        if batch:
            self._write(batch)

    def _encode_into(self, batch: list[tuple[int, bytes]], item: Queued) -> None:
        try:
            line = line_for(item, self._timestamp(item.wall), self.with_client)
            batch.append((item.level, self._encode(line)))
        except Exception:
            self._report(f"cannot encode a {item.kind} line")

    def _note_drops(self, batch: list[tuple[int, bytes]]) -> None:
        dropped = self.dropped
        if dropped == self._reported_drops:
            return
        line = {
            "ts": self._timestamp(time.time()),
            "level": LEVEL_NAMES[logging.WARNING],
            "event": "log_dropped",
            "dropped": dropped - self._reported_drops,
            "dropped_total": dropped,
        }
        self._reported_drops = dropped
        batch.append((logging.WARNING, self._encode(line)))

    def _write(self, batch: list[tuple[int, bytes]]) -> None:
        try:
            self.output.write(batch)
        except Exception:
            self._report(f"cannot write {len(batch)} line(s); they are lost")
        else:
            self.written += len(batch)

    def _close(self) -> None:
        try:
            self.output.close()
        except Exception:
            self._report("cannot close the output")

    def _report(self, what: str) -> None:
        now = time.monotonic()
        if now - self._last_report >= _REPORT_EVERY:
            self._last_report = now
            self._errors.exception("request log: %s", what)
