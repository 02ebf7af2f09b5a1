"""The plugin as an operator configures it (listed in ``[gateway] plugins``, options
in ``[plugin.otel]``): OTLP/HTTP to a collector on a socket, the console, none,
and the configuration errors that stop the gateway before it serves."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from sluiceway_otel import OtelPlugin, TraceSink, find_sink, http_traces_url

import sluiceway
from sluiceway.testing import RunningServer

Factory = Callable[..., RunningServer]
BODY = {"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}]}


def config(otel: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "gateway": {"plugins": ["mock", "otel"]},
        "providers": [{"name": "mock", "type": "mock", "models": ["mock-gpt"]}],
        "plugin": {"otel": otel},
        **extra,
    }


@dataclass
class Collector:
    """An OTLP/HTTP collector: records each POST's path, headers and body."""

    port: int = 0
    posts: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
def collector() -> Iterator[Collector]:
    seen = Collector()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            seen.posts.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    seen.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield seen
    server.shutdown()
    server.server_close()
    thread.join(10)


def test_otlp_http_sends_the_spans_with_the_secret_header(
    gateway_factory: Factory, collector: Collector, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_TEST_TOKEN", "Bearer s3cret-token")
    server = gateway_factory(config({
        "endpoint": collector.url, "headers": {"Authorization": "env:OTEL_TEST_TOKEN"},
        "service_name": "gw-otlp",
    }))
    sink = find_sink(server.gateway)
    assert isinstance(sink, TraceSink)
    assert "s3cret" not in repr(sink.options)
    response = httpx.post(server.base_url + "/chat/completions", json=BODY, timeout=30)
    assert response.status_code == 200
    server.stop()  # shutting the provider down exports what is queued

    assert collector.posts
    names: list[str] = []
    for path, headers, body in collector.posts:
        assert path == "/v1/traces"
        assert headers["authorization"] == "Bearer s3cret-token"
        assert headers["content-type"] == "application/x-protobuf"
        export = ExportTraceServiceRequest.FromString(body)
        for resource_spans in export.resource_spans:
            resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            assert resource["service.name"] == "gw-otlp"
            names += [s.name for scope in resource_spans.scope_spans for s in scope.spans]
    assert sorted(names) == ["chat mock-gpt", "chat mock-gpt"]


def test_the_console_exporter_prints_one_json_span_per_line(
    gateway_factory: Factory, capfd: pytest.CaptureFixture[str]
) -> None:
    server = gateway_factory(config({"exporter": "console"}))
    assert httpx.get(server.base_url + "/models", timeout=30).status_code == 200
    server.stop()
    lines = [line for line in capfd.readouterr().out.splitlines() if line.startswith("{")]
    (span,) = [json.loads(line) for line in lines]
    assert span["name"] == "GET /v1/models"
    assert span["kind"] == "SpanKind.SERVER"


def test_exporter_none_serves_without_tracing(gateway_factory: Factory) -> None:
    server = gateway_factory(config({"exporter": "none", "propagate": True}))
    sink = find_sink(server.gateway)
    assert isinstance(sink, TraceSink) and not sink.enabled
    response = httpx.post(server.base_url + "/chat/completions", json=BODY, timeout=30)
    assert response.status_code == 200
    assert sink.tracer_provider is None


def test_provider_addresses_never_carry_credentials() -> None:
    app = sluiceway.create_app({
        "gateway": {"plugins": ["openai", "anthropic", "mock", "otel"]},
        "providers": [
            {"name": "azure-east", "type": "openai", "models": ["a"],
             "base_url": "https://user:hunter2@east.example.com:8443/v1"},
            {"name": "plain", "type": "openai", "models": ["b"],
             "base_url": "http://10.0.0.7/v1"},
            {"name": "claude", "type": "anthropic", "models": ["c"], "api_key": "sk-ant-x"},
            {"name": "mock", "type": "mock", "models": ["d"]},
        ],
        "plugin": {"otel": {"exporter": "none",
                            "provider_names": {"azure-east": "azure.ai.openai"}}},
    })
    sink = find_sink(app)
    assert sink is not None
    assert {name: (p.system, p.address, p.port) for name, p in sink.providers.items()} == {
        "azure-east": ("azure.ai.openai", "east.example.com", 8443),
        "plain": ("openai", "10.0.0.7", 80),
        "claude": ("anthropic", "api.anthropic.com", 443),
        "mock": ("mock", None, None),
    }


def test_http_endpoints_get_the_traces_path_unless_they_have_one() -> None:
    assert http_traces_url("http://collector:4318") == "http://collector:4318/v1/traces"
    assert http_traces_url("http://collector:4318/") == "http://collector:4318/v1/traces"
    assert http_traces_url("https://otlp.example.com/otlp/v1/traces") == (
        "https://otlp.example.com/otlp/v1/traces"
    )


# --------------------------------------------------------------------------
# Configuration errors: the gateway does not start
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("otel", "key", "words"),
    [
        ({"colour": "blue"}, "plugin.otel.colour", "unknown key"),
        ({"exporter": "zipkin"}, "plugin.otel.exporter", "zipkin"),
        ({"sample_ratio": 1.5}, "plugin.otel.sample_ratio", "<= 1"),
        ({"endpoint": "collector:4318"}, "plugin.otel", "http:// or https://"),
        ({"endpoint": "https://u:p@collector"}, "plugin.otel", "in headers"),
        # (msgspec names a dict's value "[...]"; the message names the variable.)
        ({"headers": {"x-key": "env:OTEL_TEST_UNSET"}}, "plugin.otel.headers[...]",
         "OTEL_TEST_UNSET is not set"),
        ({"max_age": "0s"}, "plugin.otel", "max_age must be longer than 0s"),
    ],
)
def test_a_bad_option_stops_the_gateway_naming_it(
    otel: dict[str, Any], key: str, words: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OTEL_TEST_UNSET", raising=False)
    with pytest.raises(sluiceway.ConfigError) as failed:
        sluiceway.create_app(config(otel))
    assert failed.value.key == key
    assert words in str(failed.value)


def test_grpc_without_its_package_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    # None in sys.modules makes the import fail, installed or not.
    monkeypatch.setitem(
        sys.modules, "opentelemetry.exporter.otlp.proto.grpc.trace_exporter", None
    )
    with pytest.raises(sluiceway.ConfigError) as failed:
        sluiceway.create_app(config({"protocol": "grpc"}))
    assert failed.value.key == "plugin.otel.protocol"
    assert "pip install 'sluiceway-otel[grpc]'" in str(failed.value)


def test_the_plugin_object_checks_its_options_at_once() -> None:
    with pytest.raises(sluiceway.ConfigError) as failed:
        OtelPlugin(sample_ratio=-1)
    assert failed.value.key == "plugin.otel.sample_ratio"
