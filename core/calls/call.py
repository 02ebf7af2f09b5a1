"""One model call, typed: what a request asks of a model and what became of it.

A :class:`ModelCall` is created once per model-calling request, right after the
body is parsed and the model resolved, and handed to the
:class:`~sluiceway.calls.CallRunner`, which fills in the rest as the call goes:
the deployment that served it, its usage, its cost, its status. Call policies
(limits, budgets, guards, caches) read and annotate it; event sinks and the
request's end read it. Nothing about a call lives in untyped ``ctx.state`` keys.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from ..errors import InvalidRequest
from ..wire.estimate import estimate_input_tokens, max_output_tokens
from ..wire.usage import Usage
from .dispatch import Attempts

if TYPE_CHECKING:
    from ..components import (
        ChatRequest,
        EmbeddingsRequest,
        MessagesRequest,
        Principal,
        ResponsesRequest,
        Send,
    )
    from ..errors import GatewayError
    from ..events import Event
    from ..http.context import RequestContext
    from .answers import OutputStage, Recording
    from .router import Deployment, ModelGroup

__all__ = ["CallKind", "CallPolicy", "ModelCall", "Settle"]

CallKind = Literal["chat", "messages", "count_tokens", "responses", "embeddings"]

# A call's settlement: runs once, whatever way the call ended.
Settle = Callable[["ModelCall"], Awaitable[None]]


class ModelCall:
    """A request to a model, from admission to settlement.

    Set when the call is created: ``kind`` (``"chat"``, ``"messages"``,
    ``"count_tokens"``...), ``context`` (the HTTP request's
    :class:`~sluiceway.RequestContext`), ``model`` (the name the client asked
    for), ``request`` (the parsed, validated request), ``stream`` and ``group``
    (the model group the name resolved to). ``serves``, if an endpoint sets it
    before running the call, says which of the group's deployments can take this
    call at all (a provider without the capability it needs): the others are
    not tried.

    Filled in by the runner: ``attempts`` (what the retry loop did, with the
    ``deployment`` that answered), ``usage`` (a :class:`~sluiceway.Usage`, once
    the upstream reported it), ``status`` (the HTTP status the client got, 499
    when it hung up), ``error`` (the failure, if any), ``ttft`` (seconds from the
    request's arrival to the first streamed chunk) and ``disconnected``.

    Filled in by policies: ``cost`` (US dollars, by the costs policy) and
    ``headers`` (response headers to add: on a whole answer and on an error
    they go out with the response; on a stream, those set by ``admit`` go out
    with its start). ``state`` is free for policies; key it by policy name.
    ``answered_by`` names the policy that answered the call itself (a cache
    hit, see :meth:`answer_with`), ``None`` when an upstream did.

    For the Responses API, ``request`` is the canonical chat request and
    ``native`` the client's own (a :class:`~sluiceway.ResponsesRequest`);
    ``body`` is always the client's.
    """

    __slots__ = (
        "_estimate",
        "_outputs",
        "answer",
        "answered_by",
        "attempts",
        "context",
        "cost",
        "disconnected",
        "error",
        "group",
        "headers",
        "kind",
        "model",
        "native",
        "request",
        "serves",
        "state",
        "status",
        "stream",
        "ttft",
        "usage",
    )

    def __init__(
        self,
        kind: CallKind,
        context: RequestContext,
        request: ChatRequest | MessagesRequest | EmbeddingsRequest,
        group: ModelGroup,
        *,
        stream: bool = False,
    ) -> None:
        self.kind: CallKind = kind
        self.context = context
        self.request = request
        self.model: str = request.model
        self.group = group
        self.stream = stream
        self.attempts: Attempts = Attempts()
        self.usage: Usage | None = None
        self.cost: float | None = None
        self.status = 0
        self.error: GatewayError | None = None
        self.ttft: float | None = None
        self.disconnected = False
        self.headers: dict[str, str] = {}
        self.state: dict[str, Any] = {}
        self.serves: Callable[[Deployment], bool] | None = None
        self.native: ResponsesRequest | None = None
        self.answer: Recording | None = None
        self.answered_by: str | None = None
        self._outputs: list[OutputStage] | None = None
        self._estimate: int | None = None

    def answer_with(self, recording: Recording, *, by: str) -> None:
        """Answer the call with ``recording`` instead of an upstream (from a policy's
        ``admit``; ``by`` is the policy's name). Its usage is zero: nothing was spent
        upstream. The policies admitted after it are not asked."""
        self.answer = recording
        self.answered_by = by
        self.usage = Usage()

    def add_output(self, stage: OutputStage) -> None:
        """Put ``stage`` on the way of the call's answer to the client (from a
        policy's ``admit``): it wraps the ASGI send of the response, see
        :mod:`sluiceway.calls.answers`. The first added is nearest the client."""
        if self._outputs is None:
            self._outputs = []
        self._outputs.append(stage)

    def output(self, send: Send) -> Send:
        """``send`` wrapped in the stages the policies added."""
        if self._outputs is not None:
            # Each stage wraps the send before it: the first added calls the client's.
            for stage in self._outputs:
                send = stage(send)
        return send

    @property
    def principal(self) -> Principal | None:
        """Who is calling (``None`` with authentication off)."""
        return self.context.principal

    @property
    def key_id(self) -> str | None:
        """The caller's key id, or ``None`` with authentication off."""
        principal = self.context.principal
        return principal.key_id if principal is not None else None

    @property
    def request_id(self) -> str:
        return self.context.request_id

    def candidates(self) -> list[Deployment]:
        """The group's deployments in the order its strategy gives for this request,
        less those ``serves`` rules out; a 400 ``model_not_supported`` if none is left."""
        order = self.group.order(self.request)
        if self.serves is None:
            return order
        order = [deployment for deployment in order if self.serves(deployment)]
        if not order:
            raise InvalidRequest(f"No deployment of model {self.model!r} can serve this "
                                 "request.", param="model", code="model_not_supported")
        return order

    @property
    def deployment(self) -> Deployment | None:
        """The deployment of the latest attempt (the one that answered, on success)."""
        return self.attempts.deployment

    @property
    def body(self) -> dict[str, Any]:
        """The client's JSON body as parsed, in the dialect of its route."""
        native = self.native
        return native.body if native is not None else self.request.body

    @property
    def estimated_input_tokens(self) -> int:
        """A cheap upper-bound guess of the prompt's tokens (computed once, on
        first use): see :mod:`sluiceway.wire.estimate`."""
        if self._estimate is None:
            self._estimate = estimate_input_tokens(self.request.body)
        return self._estimate

    @property
    def max_output_tokens(self) -> int | None:
        """The output cap the request sets for itself, if any; an embedding has none
        to produce, so 0."""
        if self.kind == "embeddings":
            return 0
        return max_output_tokens(self.request.body)

    def emit(self, event: Event) -> None:
        """Send ``event`` to the event sinks (nothing is done when there are none)."""
        events = self.context.gateway.events
        if events.enabled:
            events.emit(event)

    @property
    def events_enabled(self) -> bool:
        """Whether any event sink listens: build events only when this is true."""
        return self.context.gateway.events.enabled


@runtime_checkable
class CallPolicy(Protocol):
    """Something that admits model calls and settles them: a rate limit, a
    budget, a cache, a guardrail.

    The runner calls, for every call of a kind in ``kinds``, each policy's
    ``admit`` in plugins.toml order before any upstream is tried. ``admit``
    refuses by raising a :class:`~sluiceway.GatewayError` (``RateLimited``,
    ``PermissionDenied``...); the policies admitted before it are then settled
    and later ones are never asked. Otherwise it returns ``None`` or a
    *settlement*: an async callable ``settle(call)`` that the runner awaits
    exactly once when the call ends, whether it succeeded, failed, or the client
    hung up; ``call.usage``, ``call.status`` and ``call.error`` say which. A
    whole answer is settled before its response starts (so headers a settlement
    sets go out with it); a stream before its last frame.

    A policy may own resources: give it a ``lifespan()`` method returning an
    async context manager and the gateway enters it at startup.
    """

    name: str
    kinds: frozenset[str]

    async def admit(self, call: ModelCall) -> Settle | None: ...
