"""The floor: a bare forwarding proxy on the gateway's own server and client.

A raw ASGI app on hypercorn + uvloop that forwards every request body to the
upstream over one shared aiohttp session and relays the answer (streamed when
the upstream streams). No routing, validation, auth or error mapping: what any
Python gateway on this server and client costs at least. PERFORMANCE.md asks
the gateway for at least 70 % of this proxy's throughput.

    python -m benchmarks.bare_proxy --port 9200 --upstream http://127.0.0.1:9100 [--server uvicorn]

``--server uvicorn`` serves the same app on uvicorn with uvloop and httptools
instead (the server comparison).
"""

from __future__ import annotations

import argparse
from typing import Any


def make_app(upstream: str) -> Any:
    import aiohttp

    session: list[aiohttp.ClientSession] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                kind = message["type"].replace("lifespan.", "")
                if kind == "startup":
                    session.append(aiohttp.ClientSession(
                        connector=aiohttp.TCPConnector(limit=100, limit_per_host=0),
                        skip_auto_headers=("User-Agent",)))
                else:
                    await session[0].close()
                await send({"type": f"lifespan.{kind}.complete"})
                if kind == "shutdown":
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        async with session[0].post(upstream + scope["path"], data=body,
                                   headers={"content-type": "application/json"}) as response:
            content_type = response.headers.get("content-type", "application/json")
            await send({"type": "http.response.start", "status": response.status,
                        "headers": [(b"content-type", content_type.encode())]})
            if content_type.startswith("text/event-stream"):
                async for piece in response.content.iter_any():
                    await send({"type": "http.response.body", "body": piece, "more_body": True})
                await send({"type": "http.response.body", "body": b""})
            else:
                await send({"type": "http.response.body", "body": await response.read()})

    return app


async def _serve(port: int, upstream: str) -> None:
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.keep_alive_max_requests = 100_000
    config.accesslog = None
    config.include_server_header = False
    await serve(make_app(upstream), config)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--server", choices=("hypercorn", "uvicorn"), default="hypercorn")
    args = parser.parse_args()
    if args.server == "uvicorn":
        import uvicorn

        uvicorn.run(make_app(args.upstream.rstrip("/")), host="127.0.0.1", port=args.port,
                    loop="uvloop", http="httptools", lifespan="on", log_level="warning",
                    access_log=False, server_header=False, date_header=False, backlog=2048)
        return
    import uvloop

    uvloop.run(_serve(args.port, args.upstream.rstrip("/")))


if __name__ == "__main__":
    main()
