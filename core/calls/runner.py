"""The one place a model call is run.

Every model-calling endpoint (chat completions, messages, count_tokens, and
whatever comes next) parses its request, then hands a :class:`ModelCall` to the
:class:`CallRunner`, which does, in this order:

1. **capacity**: a slot of the gateway-wide in-flight cap, if one is set;
2. **admit**: each call policy for the call's kind, in plugins.toml order
   (a refusal settles the policies already admitted and is raised);
3. **route + pool + provider**: the retry loop (:mod:`sluiceway.calls.dispatch`)
   picks a deployment, takes its pool slot and calls the provider, falling
   over and retrying as the model group allows; unless a policy answered the
   call itself (a cache hit: :mod:`sluiceway.calls.answers`), whose answer is
   replayed instead;
4. **settle**: each admitted policy's settlement, exactly once, on success,
   on error and when the client hangs up; a whole answer is settled before
   its response starts, a stream before its last frame.

The answer goes out through the output stages policies added (a cache's
recorder, a guardrail's filter). The endpoint keeps what is truly its own: the
wire shape of its answer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, get_args

from ..errors import ClientDisconnected, GatewayError
from ..http.responses import send_json
from ..http.streaming import until_disconnect
from .answers import call_headers, send_recording
from .call import CallKind, CallPolicy, ModelCall, Settle

if TYPE_CHECKING:
    from ..components import ChatRequest, EmbeddingsRequest, MessagesRequest, Send
    from ..http.context import RequestContext
    from .dispatch import Dispatcher
    from .pools import SlotPool
    from .router import Deployment, ModelAccess, ModelRouter

__all__ = ["CallRunner", "Settlements"]

log = logging.getLogger("sluiceway.calls")

T = TypeVar("T")

# Status of a call whose client hung up (nginx's convention).
CLIENT_CLOSED = 499
# A failing settlement is logged at most this often per policy.
_LOG_EVERY = 60.0


class Settlements:
    """The settlements of one call's admitted policies, run exactly once."""

    __slots__ = ("_call", "_done", "_pending", "_runner")

    def __init__(self, runner: CallRunner | None, call: ModelCall | None) -> None:
        self._runner = runner
        self._call = call
        self._pending: list[tuple[str, Settle]] = []
        self._done = False

    @classmethod
    def nothing(cls) -> Settlements:
        """Settlements for a call no policy admitted: settling them does nothing."""
        settled = cls(None, None)
        settled._done = True
        return settled

    def add(self, policy: str, settle: Settle) -> None:
        if self._done:
            raise RuntimeError("these settlements have run already")
        self._pending.append((policy, settle))

    async def __call__(self) -> None:
        """Settle every admitted policy, once; later calls do nothing. A
        settlement that fails is logged and never changes the answer."""
        if self._done:
            return
        self._done = True
        call, runner = self._call, self._runner
        assert call is not None and runner is not None
        cancelled: asyncio.CancelledError | None = None
        for policy, settle in self._pending:
            try:
                await settle(call)
            except asyncio.CancelledError as exc:
                # A hang-up or shutdown mid-settlement: the other policies are still
                # owed theirs (a slot to release, a spend to record); then it goes on.
                cancelled = exc
            except Exception as exc:
                runner.settlement_failed(policy, exc)
        if cancelled is not None:
            raise cancelled


class CallRunner:
    """Runs model calls: capacity, admission, dispatch and settlement.

    Built once with the gateway; ``policies`` are the registered call policies
    in plugins.toml order, resolved per call kind here so that a call pays only
    for the policies that apply to it.
    """

    def __init__(
        self,
        dispatcher: Dispatcher,
        capacity: SlotPool | None,
        policies: Sequence[CallPolicy],
        router: Callable[[], ModelRouter],
        access: ModelAccess,
    ) -> None:
        self.dispatcher = dispatcher
        self.capacity = capacity
        self.policies = tuple(policies)
        self._router = router
        self._access = access
        self._by_kind: dict[str, tuple[CallPolicy, ...]] = {
            kind: tuple(p for p in self.policies if kind in p.kinds)
            for kind in get_args(CallKind)
        }
        self._failed_logged: dict[str, float] = {}
        # Shared by every call no policy applies to: no per-call object, no admit coroutine.
        self._nothing = Settlements.nothing()

    # -- building a call ---------------------------------------------------

    def prepare(
        self, kind: CallKind, ctx: RequestContext,
        request: ChatRequest | MessagesRequest | EmbeddingsRequest,
        *, stream: bool = False,
    ) -> ModelCall:
        """The call for a parsed request: its model resolved (404 for an unknown
        one) and the caller's access to it checked (403), before anything is
        admitted or counted."""
        group = self._router().resolve(request.model)
        self._access.check(ctx.principal, request.model)
        call = ModelCall(kind, ctx, request, group, stream=stream)
        ctx.call = call
        return call

    # -- running it --------------------------------------------------------

    async def whole(
        self, call: ModelCall, attempt: Callable[[Deployment], Awaitable[dict[str, Any]]],
        send: Send,
    ) -> None:
        """Answer whole: ``attempt(deployment)`` makes one try and returns the answer
        (a JSON object), recording ``call.usage``; it goes out through the call's
        output stages. Settled before the response starts, so the headers policies
        set (``call.headers``) go out with it."""
        ctx = call.context
        capacity = self.capacity
        if capacity is not None:
            await until_disconnect(ctx, capacity.acquire(call.group.timeout - ctx.elapsed))
        try:
            settle = await self._admit(call)
            out = call.output(send)
            if call.answer is not None:
                await send_recording(call, out, call.answer, settle)
                return
            try:
                answer = await until_disconnect(
                    ctx, self.dispatcher.run(call, attempt, hold=False))
            except BaseException as exc:
                self._failed(call, exc)
                await settle()
                raise
            call.status = 200
            await settle()
        finally:
            if capacity is not None:
                capacity.release()
        await send_json(out, 200, answer, headers=call_headers(call))

    async def stream(
        self,
        call: ModelCall,
        relay: Callable[[Send, Callable[[], Awaitable[Any]], Settlements], Awaitable[None]],
        attempt: Callable[[Deployment], Awaitable[Any]],
        send: Send,
    ) -> None:
        """A streamed answer: ``relay(send, open_stream, settle)`` sends it through
        ``send`` (the call's output stages), where ``open_stream()`` runs the retry
        loop with ``attempt`` (which returns the stream's first item and the rest,
        holding the deployment's pool slot) and ``settle()`` must be awaited before
        the stream's last frame."""
        ctx = call.context
        capacity = self.capacity
        if capacity is not None:
            await until_disconnect(ctx, capacity.acquire(call.group.timeout - ctx.elapsed))
        try:
            settle = await self._admit(call)
            out = call.output(send)

            async def open_stream() -> Any:
                opened = await self.dispatcher.run(call, attempt, hold=True)
                call.status = 200
                return opened

            try:
                if call.answer is not None:
                    await send_recording(call, out, call.answer, settle)
                else:
                    await relay(out, open_stream, settle)
            except BaseException as exc:
                self._failed(call, exc)
                raise
            finally:
                await settle()
        finally:
            if capacity is not None:
                capacity.release()

    async def single(
        self, call: ModelCall, attempt: Callable[[Deployment], Awaitable[T]],
    ) -> T:
        """One try on the first available deployment, with no pool slot, retry or
        health accounting: for calls that ask a provider something cheap (count
        tokens). Policies for the call's kind still admit and settle it."""

        async def first_available() -> T:
            order = call.candidates()
            now = time.monotonic()
            deployment = next((d for d in order if d.health.available(now)), order[0])
            call.request.upstream_model = deployment.upstream_model
            call.attempts.deployment = deployment
            return await until_disconnect(call.context, attempt(deployment))

        return await self._admitted(call, first_available)

    # -- the parts ---------------------------------------------------------

    async def _admitted(self, call: ModelCall, run: Callable[[], Awaitable[T]]) -> T:
        """Admit ``call``, ``run()`` it, and settle it once, however it ends. Settled
        before this returns, so a whole answer's headers carry what policies set."""
        settle = await self._admit(call)
        try:
            result = await run()
        except BaseException as exc:
            self._failed(call, exc)
            await settle()
            raise
        call.status = 200
        await settle()
        return result

    async def _admit(self, call: ModelCall) -> Settlements:
        policies = self._by_kind[call.kind]
        if not policies:
            return self._nothing
        settlements = Settlements(self, call)
        try:
            for policy in policies:
                settle = await policy.admit(call)
                if settle is not None:
                    settlements.add(policy.name, settle)
                if call.answer is not None:
                    break  # answered: the policies after it are not asked
        except BaseException as exc:
            self._failed(call, exc)
            await settlements()
            raise
        return settlements

    @staticmethod
    def _failed(call: ModelCall, exc: BaseException) -> None:
        """Record how the call ended, for its settlements and the request's end."""
        if isinstance(exc, GatewayError):
            call.error = exc
            if call.status == 0:
                call.status = exc.status
            for name, value in call.headers.items():
                exc.headers.setdefault(name, value)
        elif isinstance(exc, ClientDisconnected) or call.context.interrupted == (
            "client_disconnected"
        ):
            call.disconnected = True
            if call.status == 0:
                call.status = CLIENT_CLOSED
        elif call.status == 0:
            # Shutting down: the edge answers 503; anything else is the gateway's fault.
            call.status = 503 if call.context.interrupted == "shutdown" else 500

    def settlement_failed(self, policy: str, exc: Exception) -> None:
        """Log a failed settlement, at most once a minute per policy."""
        now = time.monotonic()
        if now - self._failed_logged.get(policy, -_LOG_EVERY) >= _LOG_EVERY:
            self._failed_logged[policy] = now
            log.warning("call policy %r failed to settle a call: %s: %s",
                        policy, type(exc).__name__, exc)

