"""Serve the demo site: ``python -m sluiceway_webchat_demo --port 8765``.

The one user is ``$DEMO_EMAIL`` / ``$DEMO_PASSWORD`` (by default
``demo@example.com`` / ``demo-password``): export the same two variables for the
gateway, whose provider table refers to them as ``env:DEMO_EMAIL`` and
``env:DEMO_PASSWORD``.
"""

from __future__ import annotations

import argparse
import asyncio
import os

from hypercorn.asyncio import serve
from hypercorn.config import Config

from .site import DemoSite


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve the webchat demo site.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--token-ttl", type=float, default=3600.0,
                        help="Seconds an API token lives (default 3600).")
    args = parser.parse_args()
    email = os.environ.get("DEMO_EMAIL", "demo@example.com")
    password = os.environ.get("DEMO_PASSWORD", "demo-password")
    site = DemoSite({email: password}, token_ttl=args.token_ttl)
    config = Config()
    config.bind = [f"{args.host}:{args.port}"]
    print(f"demo site on http://{args.host}:{args.port}/ (user {email})")
    asyncio.run(serve(site, config))  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
