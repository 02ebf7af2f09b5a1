"""The guardrails: what checking a call's input and answer costs.

    python -m benchmarks.guardrails [--quick] [--no-pin]

Each target is ``sluiceway serve`` with the ``openai`` provider pointed at the
mock upstream, pinned to one core (load generator and upstream on the other):
without guardrails; with one profile of every built-in rule (e-mail, phone,
card, IBAN, secrets, injection), a block list and a custom pattern, redacting
on input and output, sent a clean prompt; and sent a prompt with an e-mail, a
phone and a card number to redact. Measured whole (A c=1 p50, A c=64 req/s and
CPU per request) and streamed (C c=16 TTFB: every chunk passes the stream
guard). The direct call to the upstream is the baseline for each ratio.
"""

from __future__ import annotations

import argparse
import json
import sys

from .__main__ import BODY, Row, ms
from .cache import HEADER, measure
from .pinned import run_pinned
from .processes import Lab, Proc, free_port, gateway_config

GUARDRAILS = """
[plugin.guardrails]
default = ["all"]

[plugin.guardrails.profiles.all]
detect = ["email", "phone", "card", "iban", "secret", "injection"]
block_list = ["project nightingale"]
patterns = { employee_id = 'EMP-\\d{6}' }
actions = { injection = "block" }
"""

PII_BODY = json.dumps({**json.loads(BODY), "messages": [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Say hello in five words to jane.doe@example.com, "
                                "+1 415-555-2671, card 4111 1111 1111 1111."}]}).encode()


def scenario_guardrails(the_lab: Lab, upstream: Proc, gateway_cpu: int | None,
                        scale: float) -> list[Row]:
    direct1, _ = measure(upstream, {}, 1, 5 * scale)
    direct64, _ = measure(upstream, {}, 64, 8 * scale)
    direct_stream, _ = measure(upstream, {}, 16, 5 * scale, stream=True)
    rows: list[Row] = [("direct", ms(direct1.p(50)), "", f"{direct64.rps:,.0f}", "", "—",
                        ms(direct_stream.ttfb(50)), str(direct1.errors + direct64.errors))]
    targets = [("no guardrails", False, BODY), ("guardrails, clean prompt", True, BODY),
               ("guardrails, prompt with 3 redactions", True, PII_BODY)]
    for index, (name, guarded, body) in enumerate(targets):
        port = free_port()
        config = the_lab.workdir / f"guardrails-{index}.toml"
        base = gateway_config(upstream.url, port)
        if guarded:
            base = base.replace('plugins = ["openai"]', 'plugins = ["openai", "guardrails"]')
            base += GUARDRAILS
        config.write_text(base)
        proc = the_lab.serve(f"guardrails-{index}", config, port, cpu=gateway_cpu)
        print(name, file=sys.stderr)
        a1, _ = measure(proc, {}, 1, 5 * scale, body=body)
        a64, cpu64 = measure(proc, {}, 64, 8 * scale, body=body)
        streamed, _ = measure(proc, {}, 16, 5 * scale, stream=True, body=body)
        the_lab.stop(proc)
        rows.append((
            name, ms(a1.p(50)), f"+{ms(a1.p(50) - direct1.p(50))}",
            f"{a64.rps:,.0f}", f"{a64.rps / direct64.rps:.2f}x", ms(cpu64),
            ms(streamed.ttfb(50)), str(a1.errors + a64.errors + streamed.errors),
        ))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description="what the guardrails cost per request")
    parser.add_argument("--quick", action="store_true", help="shorter runs")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    args = parser.parse_args()
    scale = 0.5 if args.quick else 1.0
    run_pinned("benchmarks.guardrails", HEADER,
               lambda the_lab, upstream, gateway_cpu, _: scenario_guardrails(
                   the_lab, upstream, gateway_cpu, scale),
               pin=not args.no_pin)

if __name__ == "__main__":
    main()
