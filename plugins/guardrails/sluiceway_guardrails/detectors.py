"""What a guardrail looks for in a text, and where it found it.

A detector finds spans of one *rule* in a text: ``email``, ``phone`` (the
``phonenumbers`` library's matcher), ``card`` (13 to 19 digits that pass the
Luhn check), ``iban`` (checked with ``python-stdnum``), ``secret`` and
``injection`` (the bundled pattern set, ``patterns.toml``), ``block_list``
(words and phrases) and each named custom pattern. A :class:`Finding` is a
span and the rule, never the text, so nothing of the content reaches a log.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

import phonenumbers
from stdnum import iban, luhn

__all__ = [
    "BUILTIN_RULES",
    "Action",
    "Detector",
    "Finding",
    "PatternDetector",
    "PatternSet",
    "PhoneDetector",
    "block_list_pattern",
    "builtin_detector",
    "load_pattern_set",
]

Action = Literal["block", "redact", "flag"]
BUILTIN_RULES = ("email", "phone", "card", "iban", "secret", "injection")


@dataclass(frozen=True, slots=True)
class Finding:
    """``text[start:end]`` matched ``rule``; ``action`` is what the profile does
    about it, ``profile`` the profile that found it."""

    rule: str
    start: int
    end: int
    action: Action
    profile: str
    label: str


class Detector:
    """Finds the spans of one rule in a text."""

    rule: str
    # What a redacted span becomes: "[EMAIL]", "[SECRET]"...
    label: str

    def spans(self, text: str) -> Iterator[tuple[int, int]]:
        """The ``(start, end)`` of every match, in order."""
        raise NotImplementedError


class PatternDetector(Detector):
    """A regular expression (case-insensitive), with an optional check of
    each match (a checksum)."""

    def __init__(self, rule: str, pattern: str | re.Pattern[str], *,
                 check: Callable[[str], bool] | None = None, label: str | None = None,
                 trim: bool = False) -> None:
        self.rule = rule
        self.label = label or f"[{rule.upper()}]"
        self.pattern = (pattern if isinstance(pattern, re.Pattern)
                        else re.compile(pattern, re.IGNORECASE))
        self.check = check
        # A failed check may be a match that ran on into the next word or number:
        # then its longest run of whole groups that passes is the match.
        self.trim = trim

    def spans(self, text: str) -> Iterator[tuple[int, int]]:
        check = self.check
        for match in self.pattern.finditer(text):
            start, end = match.span()
            if check is None or check(text[start:end]):
                yield start, end
            elif self.trim:
                found = self._trimmed(text, start, end, check)
                if found is not None:
                    yield found

    @staticmethod
    def _trimmed(text: str, start: int, end: int,
                 check: Callable[[str], bool]) -> tuple[int, int] | None:
        """The longest run of whole groups (split at spaces and dashes) of the
        match that passes the check."""
        bounds = [start] + [i + 1 for i in range(start, end) if text[i] in " -"] + [end + 1]
        windows = [(bounds[a], bounds[b] - 1) for a in range(len(bounds) - 1)
                   for b in range(a + 1, len(bounds))]
        # Numbers are written in their usual groups (4 4 4 4, or 4 6 5), and do
        # not begin inside a dashed number: a window like that is taken before
        # a longer one that only passes by chance.
        windows.sort(key=lambda window: (not _usual_groups(text[window[0]:window[1]]),
                                         window[0] > 0 and text[window[0] - 1] == "-",
                                         window[0] - window[1]))
        for low, high in windows:
            if (low, high) != (start, end) and check(text[low:high]):
                return low, high
        return None


class PhoneDetector(Detector):
    """Phone numbers, as the ``phonenumbers`` library reads them (valid numbers
    only): international numbers anywhere, national ones as written in ``region``."""

    rule = "phone"
    label = "[PHONE]"
    # Runs of digits and separators that could be one number: each is parsed on
    # its own, which costs a tenth of running the library's matcher over the text.
    _CANDIDATE = re.compile(r"(?<![\w+])\+?\(?\d[\d ().-]{5,40}\d(?!\w)")
    _GROUP = re.compile(r"\S+")

    def __init__(self, region: str | None) -> None:
        self.region = region

    def spans(self, text: str) -> Iterator[tuple[int, int]]:
        for candidate in self._CANDIDATE.finditer(text):
            found = candidate.group()
            digits = sum(char.isdigit() for char in found)
            if digits < 7:
                continue
            start = candidate.start()
            if digits <= 15:
                if self._valid(found):
                    yield candidate.span()
                continue
            if _usual_groups(found) and _is_card(found):
                continue  # a card number, not phone numbers in a row
            # Longer than any number: several in a row. Take the longest runs of
            # whole space-separated groups that are numbers.
            groups = [match.span() for match in self._GROUP.finditer(found)]
            first = 0
            while first < len(groups):
                for last in range(len(groups) - 1, first - 1, -1):
                    low, high = groups[first][0], groups[last][1]
                    if 7 <= sum(c.isdigit() for c in found[low:high]) <= 15 and self._valid(
                            found[low:high]):
                        yield start + low, start + high
                        first = last
                        break
                first += 1

    def _valid(self, text: str) -> bool:
        try:
            return bool(phonenumbers.is_valid_number(phonenumbers.parse(text, self.region)))
        except phonenumbers.NumberParseException:
            return False


_GROUPS = re.compile(r"[ -]")


def _usual_groups(text: str) -> bool:
    sizes = [len(group) for group in _GROUPS.split(text)]
    return len(sizes) == 1 or sizes in ([4, 6, 5], [4, 6, 4]) or (
        all(size == 4 for size in sizes[:-1]) and 1 <= sizes[-1] <= 4)


def _digits(text: str) -> str:
    return "".join(char for char in text if char.isdigit())


def _is_card(text: str) -> bool:
    digits = _digits(text)
    return 13 <= len(digits) <= 19 and luhn.is_valid(digits)


_EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]{1,64}@[\w-]{1,63}(?:\.[\w-]{1,63})*\.[a-z]{2,24}\b",
                    re.IGNORECASE)
_CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,60}(?![\d])")
_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}(?![A-Za-z0-9])")


@dataclass(frozen=True, slots=True)
class PatternSet:
    """Named regular expressions: the secrets and the injection phrasings."""

    secrets: Mapping[str, str]
    injection: Mapping[str, str]


def load_pattern_set(path: Path | None = None) -> PatternSet:
    """The bundled ``patterns.toml``, or a file of the same shape. Raises
    ``ValueError`` naming the entry for a pattern that does not compile."""
    if path is None:
        text = resources.files("sluiceway_guardrails").joinpath("patterns.toml").read_text(
            encoding="utf-8")
    else:
        text = path.read_text(encoding="utf-8")
    data = tomllib.loads(text)
    found: dict[str, dict[str, str]] = {}
    for section in ("secrets", "injection"):
        entries = data.get(section, {})
        if not isinstance(entries, dict) or not all(
                isinstance(value, str) for value in entries.values()):
            raise ValueError(f"[{section}] must be a table of named regular expressions")
        for name, pattern in entries.items():
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"{section}.{name}: not a valid regular expression: {exc}") \
                    from None
        found[section] = dict(entries)
    return PatternSet(secrets=found["secrets"], injection=found["injection"])


def _alternation(patterns: Iterable[str]) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{pattern})" for pattern in patterns), re.IGNORECASE)


def builtin_detector(rule: str, patterns: PatternSet, *, phone_region: str | None) -> Detector:
    """The detector of a built-in rule (one of :data:`BUILTIN_RULES`)."""
    if rule == "email":
        return PatternDetector("email", _EMAIL)
    if rule == "phone":
        return PhoneDetector(phone_region)
    if rule == "card":
        return PatternDetector("card", _CARD, check=_is_card, trim=True)
    if rule == "iban":
        return PatternDetector("iban", _IBAN, check=iban.is_valid, trim=True)
    if rule == "secret":
        return PatternDetector("secret", _alternation(patterns.secrets.values()))
    if rule == "injection":
        return PatternDetector("injection", _alternation(patterns.injection.values()))
    raise ValueError(f"unknown rule {rule!r}")


def block_list_pattern(phrases: Iterable[str]) -> re.Pattern[str]:
    """Whole words and phrases, any case, any run of spaces between words."""
    parts = [r"\s+".join(map(re.escape, phrase.split())) for phrase in phrases]
    return re.compile(r"(?<!\w)(?:" + "|".join(parts) + r")(?!\w)", re.IGNORECASE)
