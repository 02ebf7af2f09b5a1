"""The ``guardrails`` call policy: checks a call's messages before any upstream
sees them, and its answer on the way out.

``admit`` picks the call's profiles (the key's own ``guardrails``, else its
key id's or team's in the options, else ``default``; then those whose
``kinds`` and ``models`` match the call), scans the request's text and either
refuses it (400 ``guardrail_blocked``, naming the rule), rewrites it in place
(so the upstream, a cache and the request log only ever see the redacted
text) or lets it pass and reports it. For the answer it puts an output stage
on the call (:mod:`.output`). Every decision is a ``PolicyDecided`` event and
an INFO line naming the rule and the count, never the text.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sluiceway.api import (
    ConfigError,
    Gateway,
    InvalidRequest,
    ModelCall,
    PolicyDecided,
    Settle,
)

from .detectors import Finding, PatternSet, load_pattern_set
from .options import PLUGIN, GuardrailsOptions, Profile, parse_options
from .output import output_stage
from .scan import Decisions, Scanner, model_matcher, scan_json

__all__ = ["GuardrailsPolicy", "blocked_error", "create_policy"]

log = logging.getLogger("sluiceway.guardrails")

_HEADER = "x-sluiceway-guardrails"


def blocked_error(finding: Finding, stage: str) -> InvalidRequest:
    """The refusal of a blocking rule: OpenAI-shaped (Anthropic-shaped on
    ``/v1/messages``), naming the rule and the profile, never the text."""
    where = "request" if stage == "input" else "model's answer"
    return InvalidRequest(
        f"The {where} was blocked by guardrail rule {finding.rule!r} "
        f"(profile {finding.profile!r}).", code="guardrail_blocked")


class GuardrailsPolicy:
    """Redacts, blocks or reports what the configured profiles find."""

    def __init__(self, options: GuardrailsOptions, patterns: PatternSet, *,
                 name: str = PLUGIN) -> None:
        self.name = name
        self.options = options
        self.patterns = patterns
        self.kinds: frozenset[str] = frozenset(
            kind for profile in options.profiles.values() for kind in profile.kinds)
        self._models = {name: model_matcher(profile.models)
                        for name, profile in options.profiles.items()}
        self._scanners: dict[tuple[str, ...], tuple[Scanner, Scanner]] = {}
        self._unknown_logged: set[str] = set()

    def profile_names(self, call: ModelCall) -> tuple[str, ...]:
        """The names of the profiles that apply to ``call``, in order."""
        principal = call.principal
        names: Sequence[Any] | None = None
        if principal is not None:
            own = principal.attributes.get("guardrails")
            if isinstance(own, list | tuple):
                names = own
            elif principal.key_id in self.options.keys:
                names = self.options.keys[principal.key_id]
            else:
                team = principal.attributes.get("team")
                if isinstance(team, str) and team in self.options.teams:
                    names = self.options.teams[team]
        if names is None:
            names = self.options.default
        chosen: list[str] = []
        for name in names:
            profile = self.options.profiles.get(name) if isinstance(name, str) else None
            if profile is None:
                self._unknown(str(name))
                continue
            matcher = self._models[name]
            if call.kind in profile.kinds and (matcher is None or matcher.match(call.model)):
                chosen.append(name)
        return tuple(chosen)

    def scanners(self, names: tuple[str, ...]) -> tuple[Scanner, Scanner]:
        """The input and output scanners of a set of profiles (built once)."""
        found = self._scanners.get(names)
        if found is None:
            profiles: list[tuple[str, Profile]] = [(n, self.options.profiles[n]) for n in names]
            found = (Scanner(profiles, "input", self.patterns),
                     Scanner(profiles, "output", self.patterns))
            self._scanners[names] = found
        return found

    async def admit(self, call: ModelCall) -> Settle | None:
        """Check the request; put the answer's check on its way out."""
        names = self.profile_names(call)
        if not names:
            return None
        inputs, outputs = self.scanners(names)
        if inputs:
            self._check_input(call, inputs)
        if outputs and call.kind != "embeddings":
            call.add_output(output_stage(
                call, outputs, window=self.options.stream_window,
                blocked=lambda finding: blocked_error(finding, "output"),
                report=lambda decisions: self._report(call, decisions, "output")))
        return None

    def _check_input(self, call: ModelCall, scanner: Scanner) -> None:
        decisions = Decisions()
        client_body = call.body
        scan_json(scanner, client_body, decisions)
        # What goes upstream, where it is not the client's body itself: the
        # chat request translated from a Responses request, or the inputs list.
        request = call.request
        if request.body is not client_body:
            scan_json(scanner, request.body, None)
        messages = getattr(request, "messages", None)
        if messages and messages is not request.body.get("messages"):
            scan_json(scanner, {"content": messages}, None)
        inputs = getattr(request, "inputs", None)
        if inputs and inputs is not request.body.get("input"):
            scan_json(scanner, {"input": inputs}, None)
        self._report(call, decisions, "input")
        if decisions.blocked is not None:
            raise blocked_error(decisions.blocked, "input")

    def _report(self, call: ModelCall, decisions: Decisions, stage: str) -> None:
        if not decisions.counts:
            return
        if stage == "input" and self.options.decision_header:
            call.headers[_HEADER] = ", ".join(
                f"{stage}.{rule}={action}" for rule, action, _ in decisions.counts)
        # One line per call and stage, however many rules matched: the rules and
        # counts, never the text.
        log.info("request %s: guardrails %s: %s", call.request_id, stage, "; ".join(
            f"{action} {rule} of profile {profile} ({count} match{'' if count == 1 else 'es'})"
            for (rule, action, profile), count in decisions.counts.items()))
        for (rule, action, _), count in decisions.counts.items():
            if call.events_enabled:
                call.emit(PolicyDecided(request_id=call.request_id, policy=self.name,
                                        rule=rule, action=action, stage=stage, count=count,
                                        key_id=call.key_id, model=call.model))

    def _unknown(self, name: str) -> None:
        if name not in self._unknown_logged:
            self._unknown_logged.add(name)
            log.warning("a key names the guardrails profile %r, which [plugin.%s] does not "
                        "define: it is skipped", name, self.name)


def create_policy(gateway: Gateway) -> GuardrailsPolicy:
    """The ``factory(gateway)`` of the registered call policy."""
    config = gateway.config
    options = parse_options(config.plugin_options(PLUGIN), source=config.source)
    path = None
    if options.patterns_file is not None:
        path = Path(options.patterns_file).expanduser()
        if not path.is_absolute():
            path = (Path(config.base_dir) / path).resolve()
    try:
        patterns = load_pattern_set(path)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"plugin.{PLUGIN}.patterns_file: {exc}",
                          source=str(path or config.source)) from None
    return GuardrailsPolicy(options, patterns)
