"""What plugin tests use, bundled or third-party: ``fixtures`` (the pytest plugin:
a gateway on a free port, fake upstreams, Redis servers, gateway processes),
``fakes`` (``FakeOpenAI``), ``faults`` (what a fake can be scripted to do) and
``redis`` (real redis-server, Sentinel and Cluster fixtures)."""

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
)

__all__ = [
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
]
