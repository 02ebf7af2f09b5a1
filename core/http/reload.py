"""Reloading the configuration while serving, without dropping a request.

:func:`reload` builds a whole new gateway from the new configuration (plugins,
providers, routes, limits, prices), starts it, and only then points the served
gateway (the *root*, the object hypercorn or a host app holds) at it: new
requests go to the new generation from that moment. The previous generation
keeps the requests it has until they end (for up to ``[server]
graceful_timeout``), then closes its providers and plugin resources. A new
configuration that does not load, validate or start is refused with its error,
and the old one keeps serving as if nothing happened.

In-memory state (rate-limit counters, breakers, bans) starts afresh in the new
generation; with ``[state] backend = "redis"`` (and the plugins on it) it carries
over, being in Redis.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from ..config.loading import load_config
from ..errors import ConfigError, StartupError

if TYPE_CHECKING:
    from ..config.settings import Config
    from .app import Gateway

__all__ = ["reload"]

log = logging.getLogger("sluiceway")


async def reload(root: Gateway, config: Config | None = None) -> Gateway:
    """Serve ``config`` (by default the root's configuration file, read again) from
    now on; returns the new generation. Raises the new configuration's error (a
    :class:`~sluiceway.ConfigError` or :class:`~sluiceway.StartupError`) and leaves
    the old one serving."""
    root = root.root
    async with root.reload_lock():
        if root.stopping or root.active.draining:
            raise StartupError("the gateway is shutting down: not reloading")
        if config is None:
            source = root.config.source
            if source.startswith("<"):
                raise ConfigError("this gateway was not built from a file: give the new "
                                  "configuration", source=source)
            extra = [name for name, _ in root.extra_plugins]
            # Reading files and importing plugins: off the event loop.
            config = await asyncio.to_thread(load_config, source, extra_plugins=extra)
        # The root's own class: a reload builds what create_app built.
        new = await asyncio.to_thread(type(root), config, plugins=root.extra_plugins)
        new.root = root
        try:
            await new.startup()
        except BaseException:
            await new.close_generation()
            raise
        old, root.active = root.active, new
        log.info("configuration reloaded from %s: %d provider(s), %d model(s)",
                 config.source, len(new.providers), len(list(new.router.groups())))
        root.retiring.add(old)
        task = asyncio.get_running_loop().create_task(_retire(root, old))
        root.background.add(task)
        task.add_done_callback(root.background.discard)
        return new


async def _retire(root: Gateway, old: Gateway) -> None:
    """Let ``old``'s requests finish, then close it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + float(old.config.server.graceful_timeout)
    try:
        while old.inflight and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        await old.close_generation()
    except Exception:
        log.exception("closing the previous configuration's gateway failed")
    finally:
        root.retiring.discard(old)
