"""Deterministic values that validate against a JSON schema.

Used for tool-call arguments and for ``response_format`` JSON. It covers the
subset of JSON Schema that OpenAI structured outputs and function parameters use:
``type`` (one or a list), ``properties``/``required``/``additionalProperties``,
``items``/``prefixItems``/``minItems``/``maxItems``/``uniqueItems``, ``enum``,
``const``, ``anyOf``/``oneOf``/``allOf``, numeric and string bounds, a few string
``format`` values, and ``$ref`` into ``$defs``/``definitions`` (any local JSON
pointer, in fact). It does not try to satisfy ``pattern``, ``not`` or
``if``/``then``, and for ``oneOf`` it picks one branch without proving the
others reject the value.

Recursive schemas stay finite: below ``SOFT_DEPTH`` only required properties
and minimum item counts are generated, and ``anyOf`` prefers a branch that does
not recurse; a schema that forces deeper nesting than ``HARD_DEPTH`` is refused.
"""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Mapping
from typing import Any

from .text import words

__all__ = ["HARD_DEPTH", "SOFT_DEPTH", "SchemaError", "generate"]

SOFT_DEPTH = 5
HARD_DEPTH = 32

_SCALARS = ("string", "integer", "number", "boolean", "null")


class SchemaError(ValueError):
    """The schema cannot be satisfied or refers to something that is not there."""


def generate(schema: object, rng: random.Random) -> Any:
    """A value valid against ``schema`` (the root, for ``$ref`` resolution), drawn from ``rng``."""
    return _Generator(schema, rng).value(schema, 0)


class _Generator:
    __slots__ = ("rng", "root")

    def __init__(self, root: object, rng: random.Random) -> None:
        self.root = root
        self.rng = rng

    # -- resolution ---------------------------------------------------------

    def _pointer(self, ref: str) -> object:
        if ref != "#" and not ref.startswith("#/"):
            raise SchemaError(f"only local references are supported, not {ref!r}")
        node = self.root
        for raw in ref[2:].split("/") if ref != "#" else ():
            part = raw.replace("~1", "/").replace("~0", "~")
            if isinstance(node, Mapping) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                raise SchemaError(f"unresolvable reference {ref!r}")
        return node

    def _resolve(self, schema: Mapping[str, Any]) -> Mapping[str, Any]:
        """Follow ``$ref`` (siblings override the target) and fold ``allOf`` in."""
        for _ in range(HARD_DEPTH):
            ref = schema.get("$ref")
            if not isinstance(ref, str):
                break
            target = self._pointer(ref)
            if target is True:
                target = {}
            if not isinstance(target, Mapping):
                raise SchemaError(f"reference {ref!r} does not point to a schema")
            siblings = {k: v for k, v in schema.items() if k != "$ref"}
            schema = {**target, **siblings} if siblings else target
        else:
            raise SchemaError("reference cycle")
        if "allOf" in schema:
            schema = self._merge_all_of(schema)
        return schema

    def _merge_all_of(self, schema: Mapping[str, Any]) -> Mapping[str, Any]:
        merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
        for part in schema["allOf"]:
            if part is True:
                continue
            if not isinstance(part, Mapping):
                raise SchemaError("allOf holds a schema that rejects everything")
            part = self._resolve(part)
            for key, value in part.items():
                if key == "properties":
                    merged["properties"] = {**merged.get("properties", {}), **value}
                elif key == "required":
                    merged["required"] = [*merged.get("required", []), *value]
                else:
                    merged.setdefault(key, value)
        return merged

    # -- dispatch -----------------------------------------------------------

    def value(self, schema: object, depth: int) -> Any:
        if depth > HARD_DEPTH:
            raise SchemaError(f"the schema nests deeper than {HARD_DEPTH} levels")
        if schema is True or schema is None:
            schema = {}
        if schema is False:
            raise SchemaError("a schema of false accepts no value")
        if not isinstance(schema, Mapping):
            raise SchemaError(f"expected a schema object, found {type(schema).__name__}")
        schema = self._resolve(schema)
        if "const" in schema:
            return copy.deepcopy(schema["const"])
        if "enum" in schema:
            options = schema["enum"]
            if not isinstance(options, list) or not options:
                raise SchemaError("enum must be a non-empty list")
            return copy.deepcopy(options[int(self.rng.random() * len(options))])
        for key in ("anyOf", "oneOf"):
            if key in schema:
                branch = self._pick_branch(schema[key], depth)
                rest = {k: v for k, v in schema.items() if k != key}
                return self.value({**rest, **branch} if rest else branch, depth)
        kind = self._kind(schema, depth)
        if kind == "object":
            return self._object(schema, depth)
        if kind == "array":
            return self._array(schema, depth)
        if kind == "string":
            return self._string(schema)
        if kind == "integer":
            return self._integer(schema)
        if kind == "number":
            return self._number(schema)
        if kind == "boolean":
            return self.rng.random() < 0.5
        if kind == "null":
            return None
        raise SchemaError(f"unknown type {kind!r}")

    def _pick_branch(self, branches: object, depth: int) -> Mapping[str, Any]:
        if not isinstance(branches, list) or not branches:
            raise SchemaError("anyOf/oneOf must be a non-empty list")
        usable = [b if isinstance(b, Mapping) else {} for b in branches if b is not False]
        if not usable:
            raise SchemaError("anyOf/oneOf has no branch that accepts a value")
        if depth >= SOFT_DEPTH:
            # Deep in a recursive schema: take the branch least likely to recurse.
            return min(usable, key=self._recursion_risk)
        return usable[int(self.rng.random() * len(usable))]

    def _recursion_risk(self, schema: Mapping[str, Any]) -> int:
        schema = self._resolve(schema)
        kind = schema.get("type")
        if kind == "null" or "const" in schema or "enum" in schema:
            return 0
        if kind in _SCALARS:
            return 1
        return 3 if kind in ("object", "array") or "properties" in schema else 2

    def _kind(self, schema: Mapping[str, Any], depth: int) -> str:
        kind = schema.get("type")
        if isinstance(kind, list):
            if not kind:
                raise SchemaError("type must not be an empty list")
            if depth >= SOFT_DEPTH:
                scalars = [k for k in kind if k in _SCALARS]
                return "null" if "null" in kind else (scalars or kind)[0]
            return str(kind[int(self.rng.random() * len(kind))])
        if isinstance(kind, str):
            return kind
        if "properties" in schema or "required" in schema or "additionalProperties" in schema:
            return "object"
        if "items" in schema or "prefixItems" in schema:
            return "array"
        if any(k in schema for k in ("minimum", "maximum", "exclusiveMinimum", "multipleOf")):
            return "number"
        return "string"

    # -- containers ---------------------------------------------------------

    def _object(self, schema: Mapping[str, Any], depth: int) -> dict[str, Any]:
        properties: Mapping[str, Any] = schema.get("properties") or {}
        required = set(schema.get("required") or ())
        extra = schema.get("additionalProperties", True)
        rand = self.rng.random
        shallow = depth < SOFT_DEPTH
        result: dict[str, Any] = {}
        for name, sub in properties.items():
            if name in required or (shallow and rand() < 0.6):
                result[name] = self.value(sub, depth + 1)
        for name in schema.get("required") or ():
            if name not in result:
                if extra is False:
                    raise SchemaError(f"{name!r} is required but additionalProperties is false")
                result[name] = self.value(extra, depth + 1)
        minimum = int(schema.get("minProperties", 0))
        for name, sub in properties.items():
            if len(result) >= minimum:
                break
            if name not in result:
                result[name] = self.value(sub, depth + 1)
        serial = 0
        while len(result) < minimum:
            if extra is False:
                raise SchemaError("minProperties cannot be met with additionalProperties false")
            serial += 1
            result[f"{words(self.rng, 1)}_{serial}"] = self.value(extra, depth + 1)
        maximum = schema.get("maxProperties")
        if isinstance(maximum, int) and len(result) > maximum:
            optional = [name for name in result if name not in required]
            for name in optional[: len(result) - maximum]:
                del result[name]
        return result

    def _array(self, schema: Mapping[str, Any], depth: int) -> list[Any]:
        prefix = schema.get("prefixItems") or []
        items = schema.get("items", True)
        if isinstance(items, list):  # draft 4-7 tuple form
            prefix, items = items, schema.get("additionalItems", True)
        low = int(schema.get("minItems", 0))
        high = schema.get("maxItems")
        high = int(high) if isinstance(high, int) else max(low, 1) + 2
        if items is False:
            high = min(high, len(prefix))
        if low > high:
            raise SchemaError(f"minItems {low} is more than the {high} items allowed")
        if depth >= SOFT_DEPTH:
            count = low
        else:
            start = min(max(low, 1), high)
            count = start + int(self.rng.random() * (min(high, start + 2) - start + 1))
        unique = bool(schema.get("uniqueItems"))
        result: list[Any] = []
        attempts = 0
        while len(result) < count:
            position = len(result)
            sub = prefix[position] if position < len(prefix) else items
            item = self.value(sub, depth + 1)
            if unique and item in result:
                attempts += 1
                if attempts > 10 * count:
                    if len(result) >= low:
                        break
                    raise SchemaError("cannot find enough distinct items for uniqueItems")
                continue
            result.append(item)
        return result

    # -- scalars ------------------------------------------------------------

    def _string(self, schema: Mapping[str, Any]) -> str:
        rng = self.rng
        fmt = schema.get("format")
        if fmt in ("date-time", "date"):
            day = f"2024-{1 + int(rng.random() * 12):02d}-{1 + int(rng.random() * 28):02d}"
            text = day + "T12:00:00Z" if fmt == "date-time" else day
        elif fmt == "time":
            text = f"{int(rng.random() * 24):02d}:{int(rng.random() * 60):02d}:00Z"
        elif fmt == "email":
            text = f"{words(rng, 1)}@example.com"
        elif fmt in ("uri", "url"):
            text = f"https://example.com/{words(rng, 1)}"
        elif fmt == "uuid":
            digits = f"{rng.getrandbits(128):032x}"
            text = f"{digits[:8]}-{digits[8:12]}-4{digits[13:16]}-a{digits[17:20]}-{digits[20:]}"
        else:
            text = words(rng, 1 + int(rng.random() * 4))
        low = int(schema.get("minLength", 0))
        high = schema.get("maxLength")
        while len(text) < low:
            text += " " + words(rng, 1)
        if isinstance(high, int) and len(text) > high:
            if low > high:
                raise SchemaError(f"minLength {low} is more than maxLength {high}")
            text = text[:high].rstrip() or text[:high]
            text = text.ljust(low, "x")
        return text

    def _bounds(self, schema: Mapping[str, Any]) -> tuple[float | None, bool, float | None, bool]:
        low, high = schema.get("minimum"), schema.get("maximum")
        low_open = high_open = False
        exclusive_low = schema.get("exclusiveMinimum")
        exclusive_high = schema.get("exclusiveMaximum")
        if exclusive_low is True:  # draft 4: a flag on minimum
            low_open = low is not None
        elif isinstance(exclusive_low, int | float) and (low is None or exclusive_low >= low):
            low, low_open = exclusive_low, True
        if exclusive_high is True:
            high_open = high is not None
        elif isinstance(exclusive_high, int | float) and (high is None or exclusive_high <= high):
            high, high_open = exclusive_high, True
        return low, low_open, high, high_open

    def _integer(self, schema: Mapping[str, Any]) -> int:
        low, low_open, high, high_open = self._bounds(schema)
        lo = None if low is None else (math.floor(low) + 1 if low_open else math.ceil(low))
        hi = None if high is None else (math.ceil(high) - 1 if high_open else math.floor(high))
        if lo is None:
            lo = 0 if hi is None or hi >= 0 else hi - 100
        if hi is None:
            hi = lo + 100
        step = schema.get("multipleOf")
        if isinstance(step, int) and step > 0:
            first, last = -(-lo // step), hi // step
            if first > last:
                raise SchemaError(f"no multiple of {step} between {lo} and {hi}")
            return step * (first + int(self.rng.random() * (last - first + 1)))
        if lo > hi:
            raise SchemaError(f"no integer between {lo} and {hi}")
        return lo + int(self.rng.random() * (hi - lo + 1))

    def _number(self, schema: Mapping[str, Any]) -> float | int:
        step = schema.get("multipleOf")
        if isinstance(step, int):
            return self._integer(schema)
        low, low_open, high, high_open = self._bounds(schema)
        lo = float(low) if low is not None else (0.0 if high is None or high >= 0 else high - 100.0)
        hi = float(high) if high is not None else lo + 100.0
        if lo > hi or (lo == hi and (low_open or high_open)):
            raise SchemaError(f"no number between {lo} and {hi}")
        if isinstance(step, float) and step > 0:
            first, last = math.ceil(lo / step), math.floor(hi / step)
            if first <= last:
                # Validators divide and test for a whole number in binary floating
                # point, where 0.3 / 0.1 is not 3: try multiples until one divides.
                places = max(0, -math.floor(math.log10(step))) + 2
                for _ in range(32):
                    multiple = first + int(self.rng.random() * (last - first + 1))
                    for candidate in (round(step * multiple, places), step * multiple):
                        inside = (lo < candidate if low_open else lo <= candidate) and (
                            candidate < hi if high_open else candidate <= hi
                        )
                        if inside and (candidate / step).is_integer():
                            return candidate
                if first <= 0 <= last:
                    return 0.0
                raise SchemaError(f"no multiple of {step} between {lo} and {hi} survives rounding")
        value = round(lo + self.rng.random() * (hi - lo), 2)
        if value < lo or value > hi or (low_open and value <= lo) or (high_open and value >= hi):
            value = (lo + hi) / 2  # rounding stepped outside; the midpoint is always inside
        return value
