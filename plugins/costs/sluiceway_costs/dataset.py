"""The pinned price dataset: hundreds of models' list prices, from a maintained
open source, converted once into the plugin's own compact file.

``prices.json`` (beside this module) is a conversion of the model price list
that the LiteLLM project maintains (MIT licence, ``LICENSE-prices`` beside it):
for each model with per-token prices for chat, completion, responses or
embeddings, US dollars per million tokens of input, output, cache reads,
cache writes and reasoning output. ``sluiceway costs refresh-prices``
downloads the current list and writes a new file; the table the gateway uses
is this file, then the bundled ``prices.toml`` corrections, then a
``prices_file``, then ``[plugin.costs] prices``.

Names are kept as the source writes them (lower case) and also under their
bare name (without a ``provider/`` prefix or Bedrock's decoration), when no
entry of that name exists: a provider's own entry wins over a reseller's.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import msgspec

from .prices import PER_TOKENS, Price, name_candidates

__all__ = [
    "DATASET_URL",
    "Dataset",
    "Refreshed",
    "convert_dataset",
    "dataset_prices",
    "encode_dataset",
    "load_dataset",
    "refresh_dataset",
]

DATASET_URL = ("https://raw.githubusercontent.com/BerriAI/litellm/main/"
               "model_prices_and_context_window.json")
_MODES = frozenset({"chat", "completion", "responses", "embedding"})
# Whose entry names a model when several sources price the same bare name.
_FIRST_PARTY = ("openai", "anthropic", "gemini", "mistral", "deepseek", "xai", "cohere",
                "vertex_ai-language-models", "bedrock_converse", "bedrock", "azure")
_FIELDS = (("input", "input_cost_per_token"), ("output", "output_cost_per_token"),
           ("cached_input", "cache_read_input_token_cost"),
           ("cache_write", "cache_creation_input_token_cost"),
           ("reasoning", "output_cost_per_reasoning_token"))


class Dataset(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The pinned file: where it came from, when, under which licence, and per
    model ``[input, output, cached_input, cache_write, reasoning]`` in dollars
    per million tokens (``null``: not given, priced as input or output)."""

    source: str
    retrieved: str
    license: str
    models: dict[str, list[float | None]]

    def prices(self) -> dict[str, Price]:
        """The models as :class:`Price` entries."""
        found: dict[str, Price] = {}
        for name, (inp, out, cached, write, reasoning) in self.models.items():
            assert inp is not None and out is not None
            found[name] = Price(input=inp, output=out, cached_input=cached,
                                cache_write=write, reasoning=reasoning)
        return found


_decode = msgspec.json.Decoder(Dataset).decode


def load_dataset(path: Path | None = None) -> Dataset:
    """The pinned dataset (the packaged ``prices.json``, or ``path``)."""
    if path is not None:
        return _decode(path.read_bytes())
    return _decode(resources.files("sluiceway_costs").joinpath("prices.json").read_bytes())


def dataset_prices() -> dict[str, Price]:
    """The packaged dataset's prices, by name."""
    return load_dataset().prices()


def _per_million(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) \
            and value >= 0:
        return float(f"{value * PER_TOKENS:.6g}")
    return None


def _rank(item: tuple[str, Mapping[str, Any]]) -> tuple[int, int, str]:
    name, entry = item
    provider = str(entry.get("litellm_provider", ""))
    bare = next(iter(reversed(list(name_candidates(name)))), name)
    first_party = _FIRST_PARTY.index(provider) if provider in _FIRST_PARTY else len(_FIRST_PARTY)
    return (0 if bare == name.lower() else 1, first_party, name)


def convert_dataset(raw: Mapping[str, Any], *, source: str, retrieved: str,
                    license_name: str = "MIT") -> Dataset:
    """The compact dataset from the source's JSON (a mapping of model names to
    entries with ``mode`` and ``*_cost_per_token`` fields). Entries that are not
    text or embedding models, or have no input and output price, are left out.
    Raises ``ValueError`` for something that is not such a mapping."""
    if not isinstance(raw, Mapping) or not raw:
        raise ValueError("expected a JSON object of model names to their prices")
    models: dict[str, list[float | None]] = {}
    entries = [(name, entry) for name, entry in raw.items()
               if isinstance(entry, Mapping) and entry.get("mode") in _MODES]
    for name, entry in sorted(entries, key=_rank):
        values = [_per_million(entry.get(field)) for _, field in _FIELDS]
        if values[0] is None:
            continue
        if values[1] is None:
            if entry.get("mode") != "embedding":
                continue
            values[1] = 0.0
        for alias in dict.fromkeys((name.lower(), *name_candidates(name))):
            models.setdefault(alias, values)
    if not models:
        raise ValueError("no model with per-token prices was found")
    return Dataset(source=source, retrieved=retrieved, license=license_name,
                   models=dict(sorted(models.items())))


def encode_dataset(dataset: Dataset) -> bytes:
    """The file's bytes: one model per line, so that a refresh reads as a diff."""
    encode = msgspec.json.encode
    head = b"".join(b'  "%s": %s,\n' % (field.encode(), encode(getattr(dataset, field)))
                    for field in ("source", "retrieved", "license"))
    models = b",\n".join(b"    %s: %s" % (encode(name), encode(values))
                          for name, values in dataset.models.items())
    return b'{\n' + head + b'  "models": {\n' + models + b"\n  }\n}\n"


@dataclass(frozen=True, slots=True)
class Refreshed:
    """What a refresh changed: model names added, removed, and re-priced."""

    models: int
    added: int
    removed: int
    changed: int


def _read_source(source: str, timeout: float) -> Any:
    if source.startswith(("http://", "https://")):
        request = urllib.request.Request(source, headers={"user-agent": "sluiceway-costs"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            exc.close()  # it holds the connection open
            raise OSError(f"HTTP {exc.code} {exc.reason}") from None
    return json.loads(Path(source).expanduser().read_bytes())


def refresh_dataset(source: str, output: Path, *, retrieved: str,
                    timeout: float = 30.0) -> Refreshed:
    """Download (or read) ``source``, convert it and write it to ``output``
    atomically; what changed against the file there before."""
    fresh = convert_dataset(_read_source(source, timeout), source=source, retrieved=retrieved)
    try:
        before = load_dataset(output).models
    except (OSError, msgspec.DecodeError, msgspec.ValidationError):
        before = {}
    encoded = encode_dataset(fresh)
    descriptor, temporary = tempfile.mkstemp(dir=output.parent, prefix=output.name, suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(encoded)
        os.chmod(temporary, 0o644)  # a package data file, readable by all (mkstemp: 0600)
        os.replace(temporary, output)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    after = fresh.models
    return Refreshed(
        models=len(after), added=len(after.keys() - before.keys()),
        removed=len(before.keys() - after.keys()),
        changed=sum(1 for name in after.keys() & before.keys() if after[name] != before[name]))
