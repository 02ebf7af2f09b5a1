"""Team budgets: every key of a team spends from one budget; past ``warn_at`` the
answers say so, and once it is spent every key of the team gets 429
``team_budget_exceeded`` naming the team, the budget and when it resets. A key's
own ``budget`` (from the keys store) is enforced as well."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import openai
import pytest
from sluiceway_api_keys import KeyStore

from sluiceway.testing import RunningServer

HI = [{"role": "user", "content": "Count to three, please."}]


@pytest.fixture
def keys(tmp_path: Path) -> KeyStore:
    return KeyStore(tmp_path / "keys.toml")


def _gateway(gateway_factory: Callable[..., RunningServer], keys: KeyStore,
             team_budget: float) -> RunningServer:
    return gateway_factory({
        "gateway": {"plugins": ["mock", "api-keys", "costs"]},
        "auth": {"chain": ["api-keys"], "api-keys": {"keys_file": str(keys.path)}},
        "providers": [{"name": "mock", "type": "mock", "models": ["mock-gpt"]}],
        "plugin": {"costs": {"prices": {"mock-gpt": {"input": 10000.0, "output": 10000.0}},
                             "team_budgets": {"alpha": team_budget}, "warn_at": 0.5}},
    })


def _ask(server: RunningServer, secret: str) -> openai.types.chat.ChatCompletion:
    with openai.OpenAI(base_url=server.base_url, api_key=secret, max_retries=0) as client:
        return client.chat.completions.with_raw_response.create(  # type: ignore[return-value]
            model="mock-gpt", messages=HI)  # type: ignore[arg-type]


def test_a_team_shares_one_budget_warns_then_refuses(
    gateway_factory: Callable[..., RunningServer], keys: KeyStore,
) -> None:
    first = keys.create("svc-a", team="alpha")
    second = keys.create("svc-b", team="alpha")
    outsider = keys.create("other")
    server = _gateway(gateway_factory, keys, team_budget=1.0)
    answered = []
    with pytest.raises(openai.RateLimitError) as refused:
        for turn in range(200):
            answered.append(_ask(server, (first, second)[turn % 2].secret))
    assert len(answered) >= 2  # both keys spent from it
    warned = [raw.headers.get("x-sluiceway-budget-warning") for raw in answered]
    assert warned[0] is None and warned[-1] is not None
    assert "team alpha has spent" in warned[-1]
    assert refused.value.code == "team_budget_exceeded"
    assert "team alpha" in refused.value.message and "resets in" in refused.value.message
    assert int(refused.value.response.headers["retry-after"]) > 0
    # Every key of the team is refused; a key of no team is not.
    with pytest.raises(openai.RateLimitError):
        _ask(server, first.secret)
    assert _ask(server, outsider.secret).headers.get("x-sluiceway-team-spend") is None


def test_a_key_s_own_budget_from_the_store(
    gateway_factory: Callable[..., RunningServer], keys: KeyStore,
) -> None:
    small = keys.create("small", budget=0.5)
    assert keys.get(small.record.id).budget == 0.5
    server = _gateway(gateway_factory, keys, team_budget=100.0)
    with pytest.raises(openai.RateLimitError) as refused:
        for _ in range(200):
            _ask(server, small.secret)
    assert refused.value.code == "budget_exceeded"
    assert small.record.id in refused.value.message
