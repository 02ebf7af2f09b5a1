"""Mount sluiceway under /llm in a FastAPI app, chaining its lifespan with the app's own.

Run: .venv/bin/hypercorn examples.mount_in_fastapi:app --bind 127.0.0.1:8000
Then point the OpenAI SDK at http://127.0.0.1:8000/llm/v1.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

import sluiceway

gateway = sluiceway.create_app(Path(__file__).parent.parent / "plugins.toml")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # The app's own startup work would go here, around the gateway's.
    async with gateway.lifespan():
        yield


app = FastAPI(lifespan=lifespan)


@app.get("/")
async def home() -> dict[str, str]:
    return {"app": "my app", "llm": "/llm/v1"}


app.mount("/llm", gateway)
