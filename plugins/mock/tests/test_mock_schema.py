"""The schema value generator, checked against an independent validator (jsonschema)."""

from __future__ import annotations

import random
from typing import Any

import jsonschema
import pytest
from sluiceway_mock.schema import SchemaError, generate

SEEDS = range(40)

TREE: dict[str, Any] = {
    "$defs": {
        "node": {
            "type": "object",
            "properties": {
                "label": {"type": "string"},
                "children": {"type": "array", "items": {"$ref": "#/$defs/node"}},
            },
            "required": ["label", "children"],
            "additionalProperties": False,
        }
    },
    "$ref": "#/$defs/node",
}

SCHEMAS: dict[str, dict[str, Any]] = {
    "string": {"type": "string"},
    "integer": {"type": "integer"},
    "number": {"type": "number"},
    "boolean": {"type": "boolean"},
    "null": {"type": "null"},
    "any": {},
    "enum": {"enum": ["red", "green", 3, None]},
    "const": {"const": {"fixed": [1, 2]}},
    "type-list": {"type": ["string", "null"]},
    "bounded-integer": {"type": "integer", "minimum": -5, "maximum": 5},
    "exclusive-integer": {"type": "integer", "exclusiveMinimum": 1, "exclusiveMaximum": 3},
    "draft4-exclusive": {"type": "number", "minimum": 0, "exclusiveMinimum": True, "maximum": 1},
    "bounded-number": {"type": "number", "minimum": 0.5, "maximum": 0.75},
    "multiple-int": {"type": "integer", "minimum": 10, "maximum": 100, "multipleOf": 7},
    "multiple-float": {"type": "number", "minimum": 0, "maximum": 10, "multipleOf": 0.1},
    "string-length": {"type": "string", "minLength": 30, "maxLength": 35},
    "short-string": {"type": "string", "maxLength": 3},
    "formats": {
        "type": "object",
        "properties": {f: {"type": "string", "format": f}
                       for f in ("date-time", "date", "time", "email", "uri", "uuid")},
        "required": ["date-time", "date", "time", "email", "uri", "uuid"],
    },
    "weather": {
        "type": "object",
        "properties": {
            "location": {"type": "string", "description": "City and country"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            "days": {"type": "integer", "minimum": 1, "maximum": 14},
        },
        "required": ["location"],
        "additionalProperties": False,
    },
    "array-bounds": {
        "type": "array", "items": {"type": "integer"}, "minItems": 4, "maxItems": 6,
    },
    "unique-items": {
        "type": "array", "items": {"enum": ["a", "b", "c"]}, "minItems": 3, "maxItems": 3,
        "uniqueItems": True,
    },
    "prefix-items": {
        "type": "array", "prefixItems": [{"type": "string"}, {"type": "boolean"}],
        "items": False, "minItems": 2,
    },
    "any-of": {"anyOf": [{"type": "string"}, {"type": "integer", "minimum": 100}]},
    "one-of": {
        "oneOf": [
            {"type": "object", "properties": {"kind": {"const": "cat"}}, "required": ["kind"]},
            {"type": "object", "properties": {"kind": {"const": "dog"}}, "required": ["kind"]},
        ]
    },
    "all-of": {
        "allOf": [
            {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
            {"properties": {"b": {"type": "integer"}}, "required": ["b"]},
        ]
    },
    "min-properties": {
        "type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "string"}},
        "minProperties": 2,
    },
    "open-object-min": {
        "type": "object", "additionalProperties": {"type": "integer"}, "minProperties": 3,
    },
    "tree": TREE,
    "openai-strict": {
        "type": "object",
        "properties": {
            "steps": {
                "type": "array",
                "items": {"$ref": "#/$defs/step"},
            },
            "final_answer": {"type": "string"},
            "mood": {"anyOf": [{"type": "string", "enum": ["calm", "tense"]}, {"type": "null"}]},
        },
        "required": ["steps", "final_answer", "mood"],
        "additionalProperties": False,
        "$defs": {
            "step": {
                "type": "object",
                "properties": {"explanation": {"type": "string"}, "output": {"type": "string"}},
                "required": ["explanation", "output"],
                "additionalProperties": False,
            }
        },
    },
    "draft7-definitions": {
        "definitions": {"point": {
            "type": "object",
            "properties": {"x": {"type": "number"}, "y": {"type": "number"}},
            "required": ["x", "y"],
        }},
        "type": "array",
        "items": {"$ref": "#/definitions/point"},
    },
    "ref-with-siblings": {
        "$defs": {"base": {"type": "string"}},
        "$ref": "#/$defs/base",
        "maxLength": 5,
    },
    "recursive-any-of": {
        "$defs": {"expr": {"anyOf": [
            {"type": "integer"},
            {"type": "object", "properties": {
                "op": {"enum": ["+", "*"]},
                "args": {"type": "array", "items": {"$ref": "#/$defs/expr"}, "minItems": 2},
            }, "required": ["op", "args"]},
        ]}},
        "$ref": "#/$defs/expr",
    },
}


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_generated_values_validate(name: str) -> None:
    schema = SCHEMAS[name]
    validator_class = jsonschema.validators.validator_for(schema, jsonschema.Draft202012Validator)
    if name == "draft4-exclusive":
        validator_class = jsonschema.Draft4Validator
    validator = validator_class(schema)
    for seed in SEEDS:
        value = generate(schema, random.Random(seed))
        errors = [error.message for error in validator.iter_errors(value)]
        assert not errors, (seed, value, errors)


def test_values_are_deterministic_and_varied() -> None:
    schema = SCHEMAS["weather"]
    assert generate(schema, random.Random(5)) == generate(schema, random.Random(5))
    values = {repr(generate(schema, random.Random(seed))) for seed in SEEDS}
    assert len(values) > len(SEEDS) // 2


def test_additional_properties_false_adds_nothing() -> None:
    for seed in SEEDS:
        value = generate(SCHEMAS["weather"], random.Random(seed))
        assert "location" in value
        assert set(value) <= {"location", "unit", "days"}


def test_recursive_schema_stays_finite_but_nests() -> None:
    depths = []
    for seed in SEEDS:
        value = generate(TREE, random.Random(seed))
        depth, level = 0, [value]
        while level:
            depth += 1
            level = [child for node in level for child in node["children"]]
        depths.append(depth)
    assert max(depths) > 1


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ({"$ref": "#/$defs/missing"}, "unresolvable"),
        ({"$ref": "https://example.com/schema.json"}, "local"),
        (False, "false"),
        ({"type": "string", "minLength": 10, "maxLength": 2}, "minLength"),
        ({"type": "integer", "minimum": 5, "maximum": 1}, "no integer"),
        ({"type": "array", "minItems": 5, "maxItems": 1}, "minItems"),
        ({"type": "object", "required": ["x"], "additionalProperties": False}, "required"),
        ({"$defs": {"loop": {"type": "object", "properties": {"next": {"$ref": "#/$defs/loop"}},
                             "required": ["next"]}}, "$ref": "#/$defs/loop"}, "deeper"),
        ({"type": "wat"}, "unknown type"),
    ],
)
def test_impossible_schemas_raise_schema_error(schema: Any, message: str) -> None:
    with pytest.raises(SchemaError, match=message):
        generate(schema, random.Random(0))
