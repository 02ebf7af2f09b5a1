"""The guard's parts on their own: options, the client address rule, and the
in-memory store with an injected clock."""

from __future__ import annotations

from typing import Any

import pytest
from sluiceway_guard import (
    ClientAddress,
    GuardOptions,
    GuardStore,
    MemoryGuardStore,
    parse_address,
)

import sluiceway
from sluiceway import Duration
from sluiceway.config import validate_options


def parse(**options: Any) -> GuardOptions:
    return validate_options(options, GuardOptions, source="plugins.toml", key="plugin.guard")


# --------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------


def test_guard_options_defaults() -> None:
    options = parse()
    assert (options.max_failed_auth, float(options.failed_auth_window),
            float(options.ban_for)) == (10, 300.0, 900.0)
    assert (options.burst_rps, float(options.burst_window), float(options.block_for)) == (
        50.0, 1.0, 300.0)
    assert options.burst_limit == 50
    assert options.trusted_proxies == []
    assert (options.storage, options.key_prefix, options.on_storage_error) == (
        "memory://", "sluiceway:guard:", "open")


def test_guard_options_parse_durations_and_limits() -> None:
    options = parse(ban_for="1h", failed_auth_window="90s", burst_rps=0.5, burst_window="10s",
                    block_for=30, trusted_proxies=["10.0.0.0/8", "::1"],
                    storage="rediss://:pw@redis.internal:6380/1", on_storage_error="closed")
    assert (float(options.ban_for), float(options.failed_auth_window)) == (3600.0, 90.0)
    assert options.burst_limit == 5 and float(options.block_for) == 30.0
    assert parse(max_failed_auth=0, burst_rps=0).bans is False
    assert parse(burst_rps=0).bursts is False


def test_guard_options_built_in_code_accept_strings_and_numbers() -> None:
    options = GuardOptions(ban_for="10m", failed_auth_window=30,  # type: ignore[arg-type]
                           block_for=Duration(5))
    assert isinstance(options.ban_for, Duration) and float(options.ban_for) == 600.0
    assert isinstance(options.failed_auth_window, Duration)
    with pytest.raises(ValueError, match="ban_for"):
        GuardOptions(ban_for=Duration(0))


@pytest.mark.parametrize(("options", "key", "words"), [
    ({"bna_for": "1m"}, "plugin.guard.bna_for", "unknown key"),
    ({"max_failed_auth": -1}, "plugin.guard.max_failed_auth", ">= 0"),
    ({"ban_for": "0s"}, "plugin.guard", "ban_for must be longer than 0s"),
    ({"ban_for": "soon"}, "plugin.guard.ban_for", "duration"),
    ({"burst_rps": 0.5}, "plugin.guard", "at least one request"),
    ({"trusted_proxies": ["10.0.0.1", "10.0.0.999"]}, "plugin.guard",
     "trusted_proxies[1]: '10.0.0.999' is not an IP address or network"),
    ({"storage": "mysql://db"}, "plugin.guard", "storage must start with"),
    ({"storage": "memory://x"}, "plugin.guard", "exactly 'memory://'"),
    ({"storage": "redis://"}, "plugin.guard", "names no Redis server"),
    ({"on_storage_error": "maybe"}, "plugin.guard.on_storage_error", "maybe"),
    ({"ipv6_prefix": 0}, "plugin.guard.ipv6_prefix", ">= 1"),
])
def test_guard_options_errors_name_the_key(options: dict[str, Any], key: str, words: str) -> None:
    with pytest.raises(sluiceway.ConfigError) as failed:
        parse(**options)
    message = str(failed.value)
    assert message.startswith(f"plugins.toml: {key}: "), message
    assert words in message


# --------------------------------------------------------------------------
# The client address
# --------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("203.0.113.7", "203.0.113.7"),
    (" 203.0.113.7 ", "203.0.113.7"),
    ("203.0.113.7:51234", "203.0.113.7"),
    ("2001:db8::1", "2001:db8::1"),
    ("[2001:db8::1]", "2001:db8::1"),
    ("[2001:db8::1]:443", "2001:db8::1"),
    ("::ffff:203.0.113.7", "203.0.113.7"),
    ("unknown", None),
    ("", None),
    ("203.0.113.7:http", None),
    ("[2001:db8::1", None),
    ("[2001:db8::1]x", None),
    ("999.1.1.1", None),
])
def test_guard_parse_address(text: str, expected: str | None) -> None:
    address = parse_address(text)
    assert (str(address) if address is not None else None) == expected


def scope(peer: str | None, *forwarded: str) -> dict[str, Any]:
    return {
        "type": "http",
        "client": (peer, 50000) if peer is not None else None,
        "headers": [(b"x-forwarded-for", value.encode()) for value in forwarded],
    }


def test_guard_client_address_believes_xff_only_from_trusted_peers() -> None:
    client = ClientAddress(["127.0.0.1", "10.0.0.0/8"])
    # Not a trusted peer: X-Forwarded-For is the client's own word, ignored.
    assert client(scope("198.51.100.9", "203.0.113.7")) == "198.51.100.9"
    assert ClientAddress()(scope("127.0.0.1", "203.0.113.7")) == "127.0.0.1"
    # Trusted: the right-most address that is not a trusted proxy.
    assert client(scope("127.0.0.1", "203.0.113.7")) == "203.0.113.7"
    assert client(scope("127.0.0.1", "203.0.113.7, 10.1.2.3")) == "203.0.113.7"
    # What the client wrote itself (left of the real address) does not count.
    assert client(scope("127.0.0.1", "1.1.1.1, 203.0.113.7, 10.1.2.3")) == "203.0.113.7"
    assert client(scope("127.0.0.1", "garbage, 203.0.113.7")) == "203.0.113.7"
    # Several headers are one list, in order.
    assert client(scope("127.0.0.1", "1.1.1.1", "203.0.113.7, 10.0.0.2")) == "203.0.113.7"
    # Every entry a trusted proxy: the furthest one.
    assert client(scope("127.0.0.1", "10.0.0.5, 10.0.0.2")) == "10.0.0.5"
    # Malformed where it matters, empty, or absent: the peer.
    assert client(scope("127.0.0.1", "203.0.113.7, garbage")) == "127.0.0.1"
    assert client(scope("127.0.0.1", "203.0.113.7,")) == "127.0.0.1"
    assert client(scope("127.0.0.1", "")) == "127.0.0.1"
    assert client(scope("127.0.0.1")) == "127.0.0.1"
    # No peer (a Unix socket): nobody to ban. A peer that is not an IP: as it is.
    assert client(scope(None)) is None
    assert client(scope("testclient")) == "testclient"


def test_guard_client_address_groups_ipv6_by_prefix() -> None:
    assert ClientAddress(ipv6_prefix=64)(scope("2001:db8:1:2::7")) == "2001:db8:1:2::/64"
    assert ClientAddress(ipv6_prefix=128)(scope("2001:db8:1:2::7")) == "2001:db8:1:2::7"
    assert ClientAddress(ipv6_prefix=64)(scope("203.0.113.7")) == "203.0.113.7"
    behind = ClientAddress(["::1"], ipv6_prefix=48)
    assert behind(scope("::1", "2001:db8:1:2::7")) == "2001:db8:1::/48"
    assert behind(scope("::ffff:127.0.0.1")) == "127.0.0.1"


# --------------------------------------------------------------------------
# The in-memory store
# --------------------------------------------------------------------------


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def memory(clock: Clock, **options: Any) -> MemoryGuardStore:
    store = MemoryGuardStore(parse(**options), clock)
    assert isinstance(store, GuardStore)
    return store


async def test_guard_memory_bans_at_the_last_straw_and_unbans() -> None:
    clock = Clock()
    store = memory(clock, max_failed_auth=3, failed_auth_window="60s", ban_for="10m")
    assert [await store.record_failure("a") for _ in range(2)] == [0.0, 0.0]
    assert await store.ban_left("a") == 0.0
    assert await store.record_failure("a") == 600.0
    assert await store.ban_left("a") == 600.0
    assert await store.ban_left("b") == 0.0
    clock.now += 599
    assert await store.ban_left("a") == pytest.approx(1.0)
    clock.now += 1
    assert await store.ban_left("a") == 0.0
    # The counter started over with the ban: two more failures do not ban again.
    assert [await store.record_failure("a") for _ in range(2)] == [0.0, 0.0]
    assert await store.ban_left("a") == 0.0


async def test_guard_memory_failures_count_within_their_window() -> None:
    clock = Clock()
    store = memory(clock, max_failed_auth=3, failed_auth_window="60s")
    await store.record_failure("a")
    await store.record_failure("a")
    clock.now += 60  # the window of the first failure is over
    assert await store.record_failure("a") == 0.0
    assert await store.record_failure("a") == 0.0
    assert await store.record_failure("a") == 900.0


async def test_guard_memory_blocks_a_burst_then_lets_it_go() -> None:
    clock = Clock()
    store = memory(clock, burst_rps=3, burst_window="1s", block_for="5m")
    hits = [await store.hit("k") for _ in range(4)]
    assert [h.blocked_for for h in hits[:3]] == [0.0, 0.0, 0.0]
    assert (hits[3].blocked_for, hits[3].new) == (300.0, True)
    assert (await store.hit("other")).blocked_for == 0.0
    clock.now += 100
    again = await store.hit("k")
    assert (again.blocked_for, again.new) == (200.0, False)
    clock.now += 200
    assert [(await store.hit("k")).blocked_for for _ in range(3)] == [0.0, 0.0, 0.0]
    clock.now += 1  # a new window
    assert [(await store.hit("k")).blocked_for for _ in range(3)] == [0.0, 0.0, 0.0]


async def test_guard_memory_is_bounded() -> None:
    clock = Clock()
    store = memory(clock, max_failed_auth=2, failed_auth_window="1s", ban_for="2s",
                   burst_rps=1, max_entries=50)
    for n in range(1000):
        await store.record_failure(f"10.0.{n // 250}.{n % 250}")
        await store.hit(f"key-{n}")
    assert len(store.failures) <= 50 and len(store.bursts) <= 50
    # Expired entries go as they age, a few per call, without a full scan.
    clock.now += 10
    for n in range(20):
        await store.record_failure(f"192.0.2.{n}")
        await store.hit(f"fresh-{n}")
    assert len(store.failures) == 20 and len(store.bursts) == 20
    for _ in range(2):  # a ban, and its expiry
        await store.record_failure("198.51.100.1")
    assert len(store.bans) == 1
    clock.now += 3
    await store.record_failure("198.51.100.2")
    assert len(store.bans) == 0
