"""What every ``sluiceway`` command shares: where its configuration comes from,
``--config`` and ``--debug``, logging, and how a command fails."""

from __future__ import annotations

import logging
import os
import sys

import click

from ..logformat import JsonFormatter

__all__ = [
    "CONFIG_ENV",
    "DEFAULT_CONFIG",
    "config_option",
    "configure_logging",
    "debug_option",
    "fail",
    "resolve_config_path",
]

DEFAULT_CONFIG = "plugins.toml"
CONFIG_ENV = "SLUICEWAY_CONFIG"

log = logging.getLogger("sluiceway")


def configure_logging(debug: bool, log_format: str = "text") -> None:
    """Log to stderr, as text or JSON lines, at DEBUG with ``--debug``."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO, handlers=[handler],
                        force=True)
    # hypercorn logs a harmless traceback for tasks it cancels at exit.
    logging.getLogger("hypercorn.error").setLevel(logging.WARNING if not debug else logging.DEBUG)


# Where the top-level ``sluiceway --config FILE`` is kept for the command it runs.
CONFIG_META_KEY = "sluiceway.config"


def resolve_config_path(value: str | None = None) -> str:
    """The configuration a command uses: its own ``--config``, else the one given
    before the command (``sluiceway --config FILE keys list``), else
    ``$SLUICEWAY_CONFIG``, else ``./plugins.toml``. For plugin commands too."""
    if value:
        return value
    ctx = click.get_current_context(silent=True)
    given = ctx.meta.get(CONFIG_META_KEY) if ctx is not None else None
    return given or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG


def fail(exc: BaseException, debug: bool) -> None:
    """End a command on ``exc``: one clear line, the traceback only with ``--debug``."""
    if debug:
        log.exception("startup failed")
    click.echo(f"error: {exc}", err=True)
    sys.exit(2)


config_option = click.option(
    "--config",
    "config_path",
    metavar="FILE",
    default=None,
    help=f"plugins.toml to use (default: ${CONFIG_ENV} or ./{DEFAULT_CONFIG}).",
)
debug_option = click.option("--debug", is_flag=True, help="Debug logging and full tracebacks.")


