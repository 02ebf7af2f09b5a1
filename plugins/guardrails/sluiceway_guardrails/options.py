"""``[plugin.guardrails]``: the profiles, and which calls each applies to."""

from __future__ import annotations

import re
from typing import Annotated, Literal

import msgspec

from sluiceway.api import validate_options

from .detectors import BUILTIN_RULES, Action

__all__ = ["PLUGIN", "GuardrailsOptions", "Profile", "parse_options"]

PLUGIN = "guardrails"

Rule = Literal["email", "phone", "card", "iban", "secret", "injection"]
GuardedKind = Literal["chat", "messages", "responses", "embeddings"]
_NAME = r"^[a-z][a-z0-9_-]*$"


class Profile(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[plugin.guardrails.profiles.<name>]``: what to look for, what to do
    about it, and where."""

    # Built-in rules: "email", "phone", "card", "iban", "secret", "injection".
    detect: list[Rule] = msgspec.field(default_factory=list)
    # Words and phrases (whole words, any case): the rule "block_list".
    block_list: list[Annotated[str, msgspec.Meta(min_length=1)]] = msgspec.field(
        default_factory=list)
    # Named regular expressions (case-insensitive); each name is a rule.
    patterns: dict[Annotated[str, msgspec.Meta(pattern=_NAME)], str] = msgspec.field(
        default_factory=dict)
    # What every rule of the profile does: refuse the call, rewrite the match
    # as "[EMAIL]", "[CARD]"..., or only report it.
    action: Action = "redact"
    # Per rule, replacing `action` for it: { injection = "block" }.
    actions: dict[str, Action] = msgspec.field(default_factory=dict)
    # Where it checks: the request's messages, the model's answer, or both.
    # "injection" is only ever checked on input.
    on: list[Literal["input", "output"]] = msgspec.field(
        default_factory=lambda: ["input", "output"])
    # The calls it applies to, and glob patterns of model names (empty: all).
    kinds: list[GuardedKind] = msgspec.field(
        default_factory=lambda: ["chat", "messages", "responses", "embeddings"])
    models: list[str] = msgspec.field(default_factory=list)
    # The region national phone numbers are read in (ISO 3166 code); numbers
    # written with +<country code> are found whatever it is.
    phone_region: str | None = "US"

    def rules(self) -> list[str]:
        """Every rule name the profile checks."""
        names: list[str] = list(self.detect)
        if self.block_list:
            names.append("block_list")
        names.extend(self.patterns)
        return names

    def __post_init__(self) -> None:
        for name, pattern in self.patterns.items():
            if name in BUILTIN_RULES or name == "block_list":
                raise ValueError(f"patterns.{name}: the name of a built-in rule")
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"patterns.{name}: not a valid regular expression: {exc}") \
                    from None
        unknown = set(self.actions) - set(self.rules())
        if unknown:
            raise ValueError(f"actions names rules the profile does not check: "
                             f"{', '.join(sorted(unknown))}")
        if not self.rules():
            raise ValueError("the profile checks nothing: give detect, block_list or patterns")
        if not self.on or not self.kinds:
            raise ValueError("on and kinds must each name at least one")
        if self.phone_region is not None and not re.fullmatch(r"[A-Z]{2}", self.phone_region):
            raise ValueError("phone_region must be a two-letter region code such as \"GB\"")

    def action_of(self, rule: str) -> Action:
        return self.actions.get(rule, self.action)


class GuardrailsOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[plugin.guardrails]``."""

    profiles: dict[Annotated[str, msgspec.Meta(pattern=_NAME)], Profile] = msgspec.field(
        default_factory=dict)
    # The profiles of a call whose key names none: empty, guardrails are opt-in.
    default: list[str] = msgspec.field(default_factory=list)
    # Profiles by key id and by team, replacing `default` for them. A key's own
    # `guardrails` (in the keys file) comes first of all.
    keys: dict[str, list[str]] = msgspec.field(default_factory=dict)
    teams: dict[str, list[str]] = msgspec.field(default_factory=dict)
    # A TOML file of [secrets] and [injection] patterns replacing the bundled set.
    patterns_file: str | None = None
    # Streamed output: characters held back per choice before they go out, so
    # that a match split over chunks is caught before any of it is sent.
    stream_window: Annotated[int, msgspec.Meta(ge=8, le=4096)] = 64
    # Report decisions in the x-sluiceway-guardrails response header.
    decision_header: bool = True

    def __post_init__(self) -> None:
        named = [("default", self.default)]
        named += [(f"keys.{key}", names) for key, names in self.keys.items()]
        named += [(f"teams.{team}", names) for team, names in self.teams.items()]
        for where, names in named:
            unknown = [name for name in names if name not in self.profiles]
            if unknown:
                raise ValueError(f"{where} names profiles that are not defined: "
                                 f"{', '.join(unknown)}")


def parse_options(raw: object, *, source: str) -> GuardrailsOptions:
    """Validate ``[plugin.guardrails]``; an error names the file and the key."""
    return validate_options(raw, GuardrailsOptions, source=source, key=f"plugin.{PLUGIN}")
