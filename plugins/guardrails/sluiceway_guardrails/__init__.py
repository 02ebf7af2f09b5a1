"""sluiceway call policy ``guardrails``: PII, secrets, block lists and prompt
injection, checked on a call's messages and on its answer.

Opt-in: a call is checked by the profiles its key names (``guardrails`` in the
keys file), else those of its key id or team in the options, else
``default`` (empty unless set)::

    [gateway]
    plugins = ["openai", "api-keys", "limits", "guardrails", "cache"]

    [plugin.guardrails]
    default = ["pii"]

    [plugin.guardrails.profiles.pii]
    detect = ["email", "phone", "card", "iban", "secret", "injection"]
    action = "redact"
    actions = { injection = "block", secret = "block" }

A blocking rule answers 400 ``guardrail_blocked`` naming the rule; a redacting
one rewrites the match as ``[EMAIL]``, ``[CARD]``...; ``flag`` only reports.
Streams are checked as they go, holding back a few characters per choice.
See README.md.
"""

from __future__ import annotations

from collections.abc import Callable

from sluiceway.api import CallPolicyType, hookimpl

from .detectors import BUILTIN_RULES, Finding, PatternSet, load_pattern_set
from .options import PLUGIN, GuardrailsOptions, Profile, parse_options
from .policy import GuardrailsPolicy, blocked_error, create_policy
from .scan import Decisions, Scanner, apply_findings, text_slots

__all__ = [
    "BUILTIN_RULES",
    "PLUGIN",
    "Decisions",
    "Finding",
    "GuardrailsOptions",
    "GuardrailsPolicy",
    "PatternSet",
    "Profile",
    "Scanner",
    "apply_findings",
    "blocked_error",
    "create_policy",
    "load_pattern_set",
    "parse_options",
    "register_call_policies",
    "text_slots",
]


@hookimpl
def register_call_policies(register: Callable[[CallPolicyType], None]) -> None:
    register(CallPolicyType(PLUGIN, create_policy, description="guardrails"))
