"""The sluiceway gateway app served by uvicorn (uvloop + httptools), for the server comparison.

    python -m benchmarks.uvicorn_gateway --config plugins.toml --port 9300

The same ``sluiceway.create_app(path)`` ASGI app that ``sluiceway serve`` puts on
hypercorn; the gateway's providers start on the ASGI lifespan either way. Host and
port come from the command line, not ``[server]``; the graceful drain of
``sluiceway.http.server`` is not used (uvicorn has its own). For measurement only:
uvicorn keeps slow-loris connections open and accepts 100 KB headers
(DEPENDENCIES.md section 3), and speaks no HTTP/2.
"""

from __future__ import annotations

import argparse


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    import uvicorn

    from sluiceway import create_app

    uvicorn.run(create_app(args.config), host="127.0.0.1", port=args.port, loop="uvloop",
                http="httptools", lifespan="on", log_level="warning", access_log=False,
                server_header=False, date_header=False, backlog=2048)


if __name__ == "__main__":
    main()
