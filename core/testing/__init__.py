"""What plugin tests use, bundled or third-party: ``fixtures`` (the pytest plugin:
a gateway on a free port, fake upstreams, Redis servers, gateway processes),
``fakes`` (``FakeOpenAI``, with its Responses API in ``fake_responses``),
``faults`` (what a fake can be scripted to do), ``events`` (``EventRecorder``,
a sink that keeps every event), ``redis`` (real redis-server,
Sentinel and Cluster fixtures), ``conformance`` (the suite every provider
plugin runs, ``ProviderConformance``) and ``fault_proxy`` (``FaultProxy``, the
fault-injecting proxy it puts in front of any upstream)."""

from .events import EventRecorder
from .fixtures import (
    GatewayProcess,
    RedisServer,
    RunningServer,
    fake_openai,
    gateway_factory,
    gateway_processes,
    read_body,
    redis_cluster,
    redis_sentinel,
    redis_server,
    serve_asgi,
    start_server,
    wait_until,
    wait_until_async,
)

__all__ = [
    "EventRecorder",
    "GatewayProcess",
    "RedisServer",
    "RunningServer",
    "fake_openai",
    "gateway_factory",
    "gateway_processes",
    "read_body",
    "redis_cluster",
    "redis_sentinel",
    "redis_server",
    "serve_asgi",
    "start_server",
    "wait_until",
    "wait_until_async",
]
