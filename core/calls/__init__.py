"""The model-call boundary: a typed :class:`ModelCall`, the call policies that
admit and settle it, the :class:`CallRunner` that runs it, and the retry loop
(:mod:`.dispatch`) it runs the provider in."""

from .call import CallKind, CallPolicy, ModelCall, Settle
from .dispatch import Attempts, Dispatcher, HeldStream, RetryBudget, first_and_rest
from .runner import CallRunner, Settlements

__all__ = [
    "Attempts",
    "CallKind",
    "CallPolicy",
    "CallRunner",
    "Dispatcher",
    "HeldStream",
    "ModelCall",
    "RetryBudget",
    "Settle",
    "Settlements",
    "first_and_rest",
]
