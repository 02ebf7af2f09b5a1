"""A fast mock OpenAI upstream, run as its own process.

``POST .../chat/completions`` answers a canned ``chat.completion`` at once, or,
when the body asks for ``"stream": true``, ``--chunks`` SSE chunks ``--delay-ms``
apart, a usage chunk and ``[DONE]``. ``GET /slow`` answers after 100 ms (for the
cancellation storm). ``--latency-ms`` delays every non-streamed answer to a POST (scenario
B: 1500). Served by uvicorn with uvloop and httptools when they are
installed (about 50k req/s on one core), else by aiohttp.web.

    python -m benchmarks.upstream --port 9100 --chunks 20 --delay-ms 10 [--latency-ms 1500]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import struct
from typing import Any

COMPLETION = json.dumps({
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 1_700_000_000,
    "model": "mock-model",
    "choices": [{"index": 0, "finish_reason": "stop",
                 "message": {"role": "assistant", "content": "Hello from the mock upstream."}}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 6, "total_tokens": 18},
}).encode()


def _chunk(content: str | None, finish: str | None = None) -> bytes:
    delta = {} if content is None else {"content": content}
    return b"data: " + json.dumps({
        "id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1_700_000_000,
        "model": "mock-model", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }).encode() + b"\n\n"


USAGE_CHUNK = b"data: " + json.dumps({
    "id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1_700_000_000,
    "model": "mock-model", "choices": [],
    "usage": {"prompt_tokens": 12, "completion_tokens": 20, "total_tokens": 32},
}).encode() + b"\n\n"
JSON_HEADERS = [(b"content-type", b"application/json")]
# One 1536-dimension vector, base64 float32 as the SDKs ask for by default.
EMBEDDING = json.dumps({
    "object": "list", "model": "mock-model",
    "data": [{"object": "embedding", "index": 0,
              "embedding": base64.b64encode(struct.pack("<1536f", *([0.025] * 1536))).decode()}],
    "usage": {"prompt_tokens": 8, "total_tokens": 8},
}).encode()
DONE = b"data: [DONE]\n\n"
SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]


def make_app(chunks: int, delay: float, latency: float = 0.0) -> Any:
    token = _chunk("tok ")
    final = _chunk(None, "stop")

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                kind = message["type"].replace("lifespan.", "")
                await send({"type": f"lifespan.{kind}.complete"})
                if kind == "shutdown":
                    return
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if scope["path"] == "/slow":
            await asyncio.sleep(0.1)
        if scope["path"].endswith("/embeddings"):
            await send({"type": "http.response.start", "status": 200, "headers": JSON_HEADERS})
            await send({"type": "http.response.body", "body": EMBEDDING})
            return
        if b'"stream":true' not in body and b'"stream": true' not in body:
            if latency and scope["method"] == "POST":
                await asyncio.sleep(latency)
            await send({"type": "http.response.start", "status": 200, "headers": JSON_HEADERS})
            await send({"type": "http.response.body", "body": COMPLETION})
            return
        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
        for _ in range(chunks):
            await send({"type": "http.response.body", "body": token, "more_body": True})
            if delay:
                await asyncio.sleep(delay)
        await send({"type": "http.response.body", "body": final + USAGE_CHUNK + DONE})

    return app


def serve(port: int, chunks: int, delay: float, latency: float = 0.0) -> str:
    """Serve forever; returns only on a signal. The server used is printed first."""
    app = make_app(chunks, delay, latency)
    try:
        import httptools  # noqa: F401
        import uvicorn
        import uvloop  # noqa: F401
    except ImportError:
        from aiohttp import web

        print("upstream: aiohttp.web", flush=True)
        web.run_app(_aiohttp_app(chunks, delay, latency), host="127.0.0.1", port=port, print=None,
                    access_log=None)
        return "aiohttp.web"
    print("upstream: uvicorn+httptools+uvloop", flush=True)
    uvicorn.run(app, host="127.0.0.1", port=port, loop="uvloop", http="httptools",
                log_level="warning", access_log=False, lifespan="off", backlog=4096)
    return "uvicorn"


def _aiohttp_app(chunks: int, delay: float, latency: float = 0.0) -> Any:
    from aiohttp import web

    token = _chunk("tok ")
    final = _chunk(None, "stop")

    async def handle(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if request.path == "/slow":
            await asyncio.sleep(0.1)
        if request.path.endswith("/embeddings"):
            return web.Response(body=EMBEDDING, content_type="application/json")
        if b'"stream":true' not in body and b'"stream": true' not in body:
            if latency and request.method == "POST":
                await asyncio.sleep(latency)
            return web.Response(body=COMPLETION, content_type="application/json")
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        for _ in range(chunks):
            await response.write(token)
            if delay:
                await asyncio.sleep(delay)
        await response.write(final + USAGE_CHUNK + DONE)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--chunks", type=int, default=20)
    parser.add_argument("--delay-ms", type=float, default=10.0)
    parser.add_argument("--latency-ms", type=float, default=0.0,
                        help="delay before every non-streamed answer (scenario B: 1500)")
    args = parser.parse_args()
    serve(args.port, args.chunks, args.delay_ms / 1000, args.latency_ms / 1000)


if __name__ == "__main__":
    main()
