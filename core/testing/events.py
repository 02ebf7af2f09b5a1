"""An event sink for tests: every event a gateway emits, kept in order.

``recorder = EventRecorder()``, then pass ``plugins=[recorder.plugin()]`` to
``gateway_factory`` (or ``create_app``). Events are appended on the server's
loop; read them from the test with :meth:`EventRecorder.of` or wait for one
with :meth:`EventRecorder.ended` (a client has its answer a moment before the
request's end is emitted).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

from ..events import Event, EventSinkType, RequestEnded
from ..plugins.hookspecs import hookimpl
from .waiting import wait_until

__all__ = ["EventRecorder"]

E = TypeVar("E", bound=Event)


class EventRecorder:
    """Keeps every event (``handle`` only appends, as a sink must)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: list[Event] = []

    def handle(self, event: Event) -> None:
        with self._lock:
            self._events.append(event)

    @property
    def events(self) -> list[Event]:
        """A copy of the events so far."""
        with self._lock:
            return list(self._events)

    def of(self, kind: type[E], request_id: str | None = None) -> list[E]:
        """The events of one type (of one request, if given), in order."""
        return [e for e in self.events if isinstance(e, kind)
                and (request_id is None or e.request_id == request_id)]

    def ended(self, request_id: str, within: float = 10.0) -> RequestEnded:
        """The request's :class:`RequestEnded`, once it has been emitted."""
        if not wait_until(lambda: self.of(RequestEnded, request_id), within):
            raise AssertionError(f"no RequestEnded for {request_id} after {within} s")
        (found,) = self.of(RequestEnded, request_id)
        return found

    def plugin(self, name: str = "event-recorder") -> tuple[str, object]:
        """An in-process plugin registering this recorder as an event sink."""
        recorder = self

        class _Plugin:
            @hookimpl
            def register_event_sinks(self, register: Callable[[EventSinkType], None]) -> None:
                register(EventSinkType(name, lambda gateway: recorder))

        return name, _Plugin()
