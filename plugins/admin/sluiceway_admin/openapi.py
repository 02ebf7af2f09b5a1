"""The admin API's OpenAPI 3.1 document (``GET /admin/v1/openapi.json``)."""

from __future__ import annotations

from typing import Any

__all__ = ["OPENAPI"]

_ERROR = {"description": "An error, in the OpenAI shape.", "content": {"application/json": {
    "schema": {"$ref": "#/components/schemas/Error"}}}}
_KEY_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}


def _ok(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": schema}}}


def _list(item: str) -> dict[str, Any]:
    return {"type": "object", "properties": {
        "object": {"const": "list"},
        "data": {"type": "array", "items": {"$ref": f"#/components/schemas/{item}"}}}}


_KEY_REF = {"$ref": "#/components/schemas/Key"}
_ERRORS = {"401": _ERROR, "404": _ERROR, "400": _ERROR}

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "sluiceway admin API", "version": "1",
             "description": "Manage a sluiceway gateway: API keys, providers and pools, "
                            "web-login sessions, recent requests and spend."},
    "servers": [{"url": "/admin/v1"}],
    "security": [{"adminKey": []}],
    "paths": {
        "/keys": {
            "get": {"summary": "List the API keys (never their secrets)",
                    "responses": {"200": _ok(_list("Key")), **_ERRORS}},
            "post": {"summary": "Create an API key; its secret is in this answer only",
                     "requestBody": {"required": True, "content": {"application/json": {
                         "schema": {"$ref": "#/components/schemas/KeyCreate"}}}},
                     "responses": {"201": _ok({"$ref": "#/components/schemas/KeyWithSecret"},
                                              "Created"), **_ERRORS}},
        },
        "/keys/{id}": {
            "parameters": [_KEY_ID],
            "get": {"summary": "One API key", "responses": {"200": _ok(_KEY_REF), **_ERRORS}},
            "patch": {"summary": "Change a key's name, limits, models, expiry or enabled",
                      "requestBody": {"required": True, "content": {"application/json": {
                          "schema": {"$ref": "#/components/schemas/KeyChange"}}}},
                      "responses": {"200": _ok(_KEY_REF), **_ERRORS}},
            "delete": {"summary": "Delete a key (revoking keeps a record)",
                       "responses": {"200": _ok({"type": "object", "properties": {
                           "id": {"type": "string"}, "deleted": {"const": True}}}),
                           **_ERRORS}},
        },
        "/keys/{id}/rotate": {"parameters": [_KEY_ID], "post": {
            "summary": "Give a key a new secret; the old one stops working",
            "responses": {"200": _ok({"$ref": "#/components/schemas/KeyWithSecret"}),
                          **_ERRORS}}},
        "/keys/{id}/revoke": {"parameters": [_KEY_ID], "post": {
            "summary": "Revoke a key: every instance refuses it within reload_interval",
            "responses": {"200": _ok(_KEY_REF), **_ERRORS}}},
        "/keys/{id}/enable": {"parameters": [_KEY_ID], "post": {
            "summary": "Enable a revoked key again",
            "responses": {"200": _ok(_KEY_REF), **_ERRORS}}},
        "/teams": {"get": {"summary": "Teams: their keys and the budget the costs plugin "
                                      "gives each", "responses": {"200": _ok(_list("Team")),
                                                                  "401": _ERROR}}},
        "/teams/{name}": {
            "parameters": [{"name": "name", "in": "path", "required": True,
                            "schema": {"type": "string"}}],
            "put": {"summary": "Create a team or set its budget (US dollars per budget "
                               "period, shared by its keys; null: none)",
                    "requestBody": {"required": True, "content": {"application/json": {
                        "schema": {"type": "object", "properties": {
                            "budget": {"type": ["number", "null"], "minimum": 0}}}}}},
                    "responses": {"200": _ok({"$ref": "#/components/schemas/Team"}),
                                  **_ERRORS}},
            "delete": {"summary": "Delete a team (its keys keep their team, unbudgeted)",
                       "responses": {"200": _ok({"type": "object"}), **_ERRORS}},
        },
        "/providers": {"get": {"summary": "Providers: pool occupancy, breakers, latency",
                               "responses": {"200": _ok(_list("Provider")), "401": _ERROR}}},
        "/sessions": {"get": {"summary": "Sessions of web-login providers on this instance",
                              "responses": {"200": _ok(_list("Session")), "401": _ERROR}}},
        "/requests": {"get": {
            "summary": "The last requests this instance answered, newest first",
            "parameters": [{"name": name, "in": "query", "schema": {"type": kind}}
                           for name, kind in (("limit", "integer"), ("key_id", "string"),
                                              ("model", "string"), ("provider", "string"))],
            "responses": {"200": _ok(_list("Request")), "400": _ERROR, "401": _ERROR}}},
        "/spend": {"get": {
            "summary": "Requests, tokens and US dollars per day, by key, model or team",
            "parameters": [{"name": "by", "in": "query",
                            "schema": {"enum": ["key", "model", "team"], "default": "key"}},
                           {"name": "days", "in": "query",
                            "schema": {"type": "integer", "default": 7}}],
            "responses": {"200": _ok(_list("Spend")), "400": _ERROR, "401": _ERROR}}},
        "/reload": {"post": {
            "summary": "Reload the configuration file without dropping a request; a bad "
                       "one is refused (400 config_invalid) and the current one keeps serving",
            "responses": {"200": _ok({"type": "object", "properties": {
                "reloaded": {"const": True}, "source": {"type": "string"},
                "providers": {"type": "array", "items": {"type": "string"}},
                "models": {"type": "array", "items": {"type": "string"}}}}),
                "400": _ERROR, "401": _ERROR}}},
        "/stats": {"get": {"summary": "Totals and what is in flight now",
                           "responses": {"200": _ok({"type": "object"}), "401": _ERROR}}},
    },
    "components": {
        "securitySchemes": {"adminKey": {"type": "http", "scheme": "bearer",
                                         "description": "One of [plugin.admin] admin_keys."}},
        "schemas": {
            "Error": {"type": "object", "properties": {"error": {"type": "object", "properties": {
                "message": {"type": "string"}, "type": {"type": "string"},
                "code": {"type": ["string", "null"]}, "param": {"type": ["string", "null"]}}}}},
            "Key": {"type": "object", "properties": {
                "id": {"type": "string"}, "name": {"type": "string"},
                "prefix": {"type": "string"}, "rpm": {"type": ["integer", "null"]},
                "tpm": {"type": ["integer", "null"]},
                "max_concurrent": {"type": ["integer", "null"]},
                "team": {"type": ["string", "null"]}, "budget": {"type": ["number", "null"]},
                "models": {"type": ["array", "null"], "items": {"type": "string"}},
                "expires_at": {"type": ["string", "null"], "format": "date-time"},
                "created_at": {"type": ["string", "null"], "format": "date-time"},
                "status": {"enum": ["enabled", "revoked", "expired"]}}},
            "KeyWithSecret": {"allOf": [_KEY_REF, {"type": "object", "properties": {
                "secret": {"type": "string"}}}]},
            "KeyCreate": {"type": "object", "required": ["name"], "properties": {
                "name": {"type": "string"}, "rpm": {"type": "integer", "minimum": 1},
                "tpm": {"type": "integer", "minimum": 1},
                "max_concurrent": {"type": "integer", "minimum": 1},
                "models": {"type": "array", "items": {"type": "string"}},
                "team": {"type": "string"}, "budget": {"type": "number", "minimum": 0},
                "expires_in": {"type": "string", "examples": ["30d"]},
                "expires_at": {"type": "string", "format": "date-time"}}},
            "KeyChange": {"type": "object", "properties": {
                "name": {"type": "string"}, "rpm": {"type": ["integer", "null"]},
                "tpm": {"type": ["integer", "null"]},
                "max_concurrent": {"type": ["integer", "null"]},
                "models": {"type": ["array", "null"], "items": {"type": "string"}},
                "team": {"type": ["string", "null"]}, "budget": {"type": ["number", "null"]},
                "expires_in": {"type": "string"},
                "expires_at": {"type": ["string", "null"], "format": "date-time"},
                "enabled": {"type": "boolean"}}},
            "Team": {"type": "object", "properties": {
                "team": {"type": "string"},
                "keys": {"type": "array", "items": {"type": "string"}},
                "budget": {"type": ["number", "null"]}}},
            "Provider": {"type": "object", "properties": {
                "name": {"type": "string"}, "pool": {"type": "object"},
                "deployments": {"type": "array", "items": {"type": "object"}}}},
            "Session": {"type": "object", "properties": {
                "provider": {"type": "string"}, "held": {"type": "boolean"},
                "expires_at": {"type": ["string", "null"]}, "logins": {"type": "integer"}}},
            "Request": {"type": "object", "properties": {
                "request_id": {"type": "string"}, "at": {"type": "number"},
                "path": {"type": "string"}, "status": {"type": "integer"},
                "duration_ms": {"type": "number"}, "key_id": {"type": ["string", "null"]},
                "model": {"type": ["string", "null"]}, "cost": {"type": ["number", "null"]}}},
            "Spend": {"type": "object", "properties": {
                "day": {"type": "string"}, "requests": {"type": "integer"},
                "tokens": {"type": "integer"}, "cost": {"type": "number"}}},
        },
    },
}
