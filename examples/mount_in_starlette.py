"""Mount sluiceway under /llm in a Starlette app, sharing its lifespan.

Run: .venv/bin/hypercorn examples.mount_in_starlette:app --bind 127.0.0.1:8000
Then point the OpenAI SDK at http://127.0.0.1:8000/llm/v1.
"""

from __future__ import annotations

from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

import sluiceway

gateway = sluiceway.create_app(Path(__file__).parent.parent / "plugins.toml")


async def home(request: Request) -> JSONResponse:
    return JSONResponse({"app": "my app", "llm": "/llm/v1"})


# A mounted app gets no lifespan of its own: hand the gateway's to the host.
app = Starlette(
    routes=[Route("/", home), Mount("/llm", app=gateway)],
    lifespan=gateway.lifespan,
)
