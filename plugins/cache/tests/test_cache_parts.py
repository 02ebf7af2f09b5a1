"""The cache's parts on their own: Cache-Control directives, the memory store's bounds."""

from __future__ import annotations

import asyncio

import pytest
from sluiceway_cache import CacheOptions, MemoryAnswers, cache_directives, parse_options

from sluiceway.api import ConfigError, Recording


def test_cache_control_directives() -> None:
    found = cache_directives('No-Cache, max-age="30", private')
    assert (found.no_cache, found.no_store, found.max_age) == (True, False, 30)
    assert cache_directives("no-store").no_store
    assert cache_directives("max-age=soon").max_age is None
    assert cache_directives(None).max_age is None


def test_the_memory_store_drops_the_least_recently_used_past_its_size() -> None:
    async def run() -> None:
        store = MemoryAnswers(ttl=60, max_memory=3 * 1000)
        entry = Recording(b"application/json", (b"x" * 600,), 0.0)
        for key in "abc":
            await store.put(key, entry)
        assert await store.get("a") is not None  # a is now the most recently used
        await store.put("d", entry)
        assert await store.get("b") is None
        assert [await store.get(k) is not None for k in "acd"] == [True, True, True]
        # Larger than the whole store: not kept, and nothing else is lost.
        await store.put("huge", Recording(b"application/json", (b"x" * 5000,), 0.0))
        assert await store.get("huge") is None and await store.get("a") is not None

    asyncio.run(run())


def test_options_are_checked() -> None:
    assert parse_options({}, source="t").scope == "key"
    for bad in ({"ttl": "0s"}, {"scope": "everyone"}, {"kinds": []},
                {"max_entry_size": "2MB", "max_memory": "1MB"}, {"storage": "ftp://x"}):
        with pytest.raises(ConfigError):
            parse_options(bad, source="t")
    assert CacheOptions().kinds == ["chat", "messages", "embeddings"]


def test_semantic_index_finds_the_nearest_per_partition_and_forgets_the_oldest() -> None:
    import numpy as np
    from sluiceway_cache.semantic import SemanticIndex

    index = SemanticIndex(max_entries=2)
    north, east = np.array([1.0, 0.0], np.float32), np.array([0.0, 1.0], np.float32)
    index.add("p", north, "k-north")
    index.add("q", east, "k-east")
    found = index.nearest("p", np.array([0.9, 0.1], np.float32))
    assert found is not None and found[1] == "k-north" and found[2] > 0.99
    assert index.nearest("r", north) is None  # another partition knows nothing
    assert index.nearest("p", np.array([1.0, 0.0, 0.0], np.float32)) is None  # other model
    index.add("q", north, "k-north-q")  # a third vector: the oldest goes
    assert len(index) == 2 and index.nearest("p", north) is None
    label, key, _ = index.nearest("q", north) or (0, "", 0.0)
    assert key == "k-north-q"
    index.forget(label)
    left = index.nearest("q", north)  # only the east vector is left in q
    assert left is not None and left[1] == "k-east" and left[2] < 0.01


def test_prompt_text_is_the_conversation_and_refuses_anything_but_text() -> None:
    from sluiceway_cache.semantic import prompt_text

    assert prompt_text({"system": "Be brief.", "messages": [
        {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
        {"role": "assistant", "content": "Hello"}]}) == (
        "system: Be brief.\nuser: Hi\nassistant: Hello", ["system", "user", "assistant"])
    for body in ({"messages": []},
                 {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
                 {"messages": [{"role": "assistant", "tool_calls": [{"id": "x"}]}]},
                 {"system": [{"type": "image"}], "messages": [{"role": "user", "content": "a"}]}):
        assert prompt_text(body) is None, body
