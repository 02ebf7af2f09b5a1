"""A guardrail's scan of texts: the profiles' detectors run together, and what
their findings do to a text and to a JSON body.

:class:`Scanner` is compiled once per set of profiles and stage (input or
output). :func:`text_slots` finds the strings of a request or an answer that
are text a person or a model wrote (message contents, text parts, tool
arguments, embedding inputs), in every dialect the gateway speaks, without
knowing the dialect: by the keys that hold text.
"""

from __future__ import annotations

import fnmatch
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from .detectors import (
    Action,
    Detector,
    Finding,
    PatternDetector,
    PatternSet,
    block_list_pattern,
    builtin_detector,
)
from .options import Profile

__all__ = ["TEXT_KEYS", "Decisions", "Scanner", "apply_findings", "model_matcher", "redactions",
           "scan_json", "text_slots"]

# Keys whose string values (or lists of strings) are text, in the OpenAI,
# Anthropic and Responses shapes: contents, text parts and deltas, system
# prompts and instructions, tool-call arguments and tool outputs, embedding
# inputs. Everything else (ids, roles, URLs, base64 data) is not scanned.
TEXT_KEYS = frozenset({"content", "text", "input", "instructions", "system", "arguments",
                       "output", "delta", "refusal"})

Slot = tuple[dict[str, Any] | list[Any], Any]
_STRENGTH = {"flag": 0, "redact": 1, "block": 2}


@dataclass(frozen=True, slots=True)
class _Rule:
    detector: Detector
    action: Action
    profile: str


class Scanner:
    """The detectors of some profiles, for one stage (``"input"`` or
    ``"output"``; the injection check is input only)."""

    def __init__(self, profiles: Sequence[tuple[str, Profile]], stage: str,
                 patterns: PatternSet) -> None:
        self.stage = stage
        rules: list[_Rule] = []
        for name, profile in profiles:
            if stage not in profile.on:
                continue
            for rule in profile.detect:
                if rule == "injection" and stage != "input":
                    continue
                detector = builtin_detector(rule, patterns, phone_region=profile.phone_region)
                rules.append(_Rule(detector, profile.action_of(rule), name))
            if profile.block_list:
                rules.append(_Rule(PatternDetector("block_list", block_list_pattern(
                    profile.block_list), label="[BLOCKED]"), profile.action_of("block_list"),
                    name))
            for custom, pattern in profile.patterns.items():
                rules.append(_Rule(PatternDetector(custom, re.compile(pattern, re.IGNORECASE)),
                                   profile.action_of(custom), name))
        self._rules = tuple(rules)
        self._profiles = {rule.profile for rule in rules}

    def __bool__(self) -> bool:
        return bool(self._rules)

    def find(self, text: str) -> list[Finding]:
        """Every finding in ``text``, by position (the longest first at a tie)."""
        found = [Finding(rule.detector.rule, start, end, rule.action, rule.profile,
                         rule.detector.label)
                 for rule in self._rules for start, end in rule.detector.spans(text)
                 if end > start]
        if len(self._profiles) > 1:
            # Two profiles finding the same match: one finding, the strongest action.
            strongest: dict[tuple[str, int, int], Finding] = {}
            for finding in found:
                key = (finding.rule, finding.start, finding.end)
                other = strongest.get(key)
                if other is None or _STRENGTH[finding.action] > _STRENGTH[other.action]:
                    strongest[key] = finding
            found = list(strongest.values())
        found.sort(key=lambda f: (f.start, -f.end))
        return found


def redactions(findings: Iterable[Finding]) -> list[Finding]:
    """The redacting findings, overlapping ones merged into the first."""
    merged: list[Finding] = []
    for finding in findings:
        if finding.action != "redact":
            continue
        if merged and finding.start < merged[-1].end:
            last = merged[-1]
            if finding.end > last.end:
                merged[-1] = Finding(last.rule, last.start, finding.end, last.action,
                                     last.profile, last.label)
            continue
        merged.append(finding)
    return merged


def apply_findings(text: str, findings: Iterable[Finding]) -> str:
    """``text`` with each redacting finding replaced by its label."""
    pieces: list[str] = []
    position = 0
    for finding in redactions(findings):
        pieces.append(text[position:finding.start])
        pieces.append(finding.label)
        position = finding.end
    if not pieces:
        return text
    pieces.append(text[position:])
    return "".join(pieces)


def text_slots(node: Any, in_text: bool = False) -> Iterator[Slot]:
    """``(container, key)`` of every string in ``node`` that is text."""
    if isinstance(node, dict):
        for key, value in node.items():
            if isinstance(value, str):
                if key in TEXT_KEYS and value:
                    yield node, key
            elif isinstance(value, dict | list):
                yield from text_slots(value, key in TEXT_KEYS)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            if isinstance(value, str):
                if in_text and value:
                    yield node, index
            elif isinstance(value, dict):
                yield from text_slots(value)
            elif isinstance(value, list):
                yield from text_slots(value, in_text)


@dataclass(slots=True)
class Decisions:
    """What a scan decided: findings counted by ``(rule, action, profile)``, and
    the first finding of a blocking rule."""

    counts: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    blocked: Finding | None = None

    def count(self, finding: Finding) -> None:
        self.counts[finding.rule, finding.action, finding.profile] += 1
        if finding.action == "block" and self.blocked is None:
            self.blocked = finding


def scan_json(scanner: Scanner, node: Any, decisions: Decisions | None) -> bool:
    """Scan the text of ``node`` and redact it in place; findings are counted in
    ``decisions`` (when given). True if anything was rewritten."""
    changed = False
    for container, key in list(text_slots(node)):
        text = container[key]
        findings = scanner.find(text)
        if not findings:
            continue
        if decisions is not None:
            for finding in findings:
                decisions.count(finding)
        redacted = apply_findings(text, findings)
        if redacted != text:
            container[key] = redacted
            changed = True
    return changed


def model_matcher(models: Sequence[str]) -> re.Pattern[str] | None:
    """One pattern for a list of globs (``None``: every model)."""
    if not models:
        return None
    return re.compile("|".join(fnmatch.translate(pattern) for pattern in models))
