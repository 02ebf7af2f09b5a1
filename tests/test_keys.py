"""KeyRing: weighted picks, model globs, rest and wake, and its two errors."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from sluiceway import PermissionDenied, RateLimited
from sluiceway.upstream.keys import ApiKey, KeyRing


class Clock:
    """A hand-driven monotonic clock."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _ring(*keys: ApiKey, seed: int = 0) -> tuple[KeyRing, Clock]:
    clock = Clock()
    return KeyRing(keys, rng=random.Random(seed), clock=clock), clock


# Weights 1:2:7. Over 10,000 picks each share is within ±3 percentage points of
# 10/20/70 % (that is more than 6 standard deviations for the 70 % share), and
# Pearson's chi-square stays under 13.82, the p = 0.001 critical value for 2
# degrees of freedom. Several seeds, so the test does not hinge on one draw.
@pytest.mark.parametrize("seed", range(5))
def test_picks_follow_the_weights(seed: int) -> None:
    ring, _ = _ring(ApiKey("a", weight=1, name="a"), ApiKey("b", weight=2, name="b"),
                    ApiKey("c", weight=7, name="c"), seed=seed)
    picks = 10_000
    counts = Counter(ring.pick("gpt-4o").name for _ in range(picks))
    expected = {"a": 0.1 * picks, "b": 0.2 * picks, "c": 0.7 * picks}
    for name, want in expected.items():
        assert abs(counts[name] - want) / picks <= 0.03, counts
    chi_square = sum((counts[n] - want) ** 2 / want for n, want in expected.items())
    assert chi_square < 13.82, (chi_square, counts)


def test_fractional_weights_and_a_single_key() -> None:
    ring, _ = _ring(ApiKey("a", weight=0.25, name="a"), ApiKey("b", weight=0.75, name="b"))
    counts = Counter(ring.pick("m").name for _ in range(4000))
    assert abs(counts["b"] / 4000 - 0.75) <= 0.03
    single, _ = _ring(ApiKey("only"))
    assert {single.pick("m").secret for _ in range(10)} == {"only"}


def test_unnamed_keys_are_numbered_and_secrets_stay_out_of_repr() -> None:
    ring, _ = _ring(ApiKey("sk-secret-1"), ApiKey("sk-secret-2", name="spare"), ApiKey("sk-3"))
    assert [key.name for key in ring.keys] == ["key-1", "spare", "key-3"]
    assert "sk-secret" not in repr(ring.keys)


def test_model_globs_choose_the_serving_keys() -> None:
    ring, _ = _ring(
        ApiKey("a", name="gpt4", models=("gpt-4o*", "o1")),
        ApiKey("b", name="mini", models=("gpt-4o-mini",)),
        ApiKey("c", name="any"),
    )
    assert {ring.pick("o1").name for _ in range(200)} == {"gpt4", "any"}
    assert {ring.pick("gpt-4o-mini").name for _ in range(200)} == {"gpt4", "mini", "any"}
    assert {ring.pick("claude").name for _ in range(200)} == {"any"}
    # Globs match the whole id.
    assert {ring.pick("o1-preview").name for _ in range(200)} == {"any"}
    only, _ = _ring(ApiKey("a", models=("gpt-*",)))
    assert only.serves("gpt-4o") and not only.serves("claude")


def test_a_model_no_key_serves_is_a_client_error() -> None:
    ring, _ = _ring(ApiKey("a", models=("gpt-*",)))
    with pytest.raises(PermissionDenied) as caught:
        ring.pick("claude-3")
    assert caught.value.kind == "client"
    assert caught.value.status == 403
    assert "'claude-3'" in caught.value.message


def test_resting_keys_are_skipped_until_they_wake() -> None:
    ring, clock = _ring(ApiKey("a", name="a"), ApiKey("b", name="b"))
    a, b = ring.keys
    ring.rest(a, 30)
    assert ring.resting_for(a) == 30
    assert {ring.pick("m").name for _ in range(100)} == {"b"}
    clock.now += 29.9
    assert {ring.pick("m").name for _ in range(100)} == {"b"}
    clock.now += 0.1
    assert ring.resting_for(a) == 0
    assert {ring.pick("m").name for _ in range(100)} == {"a", "b"}
    assert ring.resting_for(b) == 0


def test_a_shorter_rest_does_not_cut_a_longer_one() -> None:
    ring, clock = _ring(ApiKey("a"))
    (key,) = ring.keys
    ring.rest(key, 60)
    ring.rest(key, 5)
    clock.now += 10
    assert ring.resting_for(key) == 50


def test_all_resting_is_rate_limited_until_the_soonest_wakes() -> None:
    ring, clock = _ring(ApiKey("a", name="a"), ApiKey("b", name="b"),
                        ApiKey("c", name="c", models=("other",)))
    a, b, _ = ring.keys
    ring.rest(a, 40)
    ring.rest(b, 15)
    with pytest.raises(RateLimited) as caught:
        ring.pick("m")
    error = caught.value
    assert error.kind == "rate_limit"
    assert error.retry_after == 15
    assert error.headers["retry-after"] == "15"
    clock.now += 15
    assert ring.pick("m") is b


def test_has_alternative() -> None:
    ring, clock = _ring(ApiKey("a", name="a"), ApiKey("b", name="b", models=("gpt-*",)))
    a, b = ring.keys
    assert ring.has_alternative("gpt-4o", excluding=a)
    assert not ring.has_alternative("claude", excluding=a)  # b does not serve it
    assert ring.has_alternative("claude", excluding=b)
    ring.rest(b, 10)
    assert not ring.has_alternative("gpt-4o", excluding=a)  # b is resting
    clock.now += 10
    assert ring.has_alternative("gpt-4o", excluding=a)


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ((), "at least one key"),
        ((ApiKey("a", weight=0),), "weight"),
        ((ApiKey("a", weight=float("nan")),), "weight"),
        ((ApiKey("a", weight=-1),), "weight"),
        ((ApiKey("a", name="x"), ApiKey("b", name="x")), "two keys are named 'x'"),
        ((ApiKey("a", models=()),), "models is empty"),
    ],
)
def test_invalid_rings_are_refused(keys: tuple[ApiKey, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        KeyRing(keys)
