"""The ``sluiceway`` command line: serve, check, plugins, and plugins' own commands."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
import msgspec

from ..config.loading import load_config
from ..config.settings import Config, ServerSettings, validate_options
from ..errors import StartupError
from ..plugins.info import builtin
from .options import (
    CONFIG_META_KEY,
    config_option,
    configure_logging,
    debug_option,
    fail,
    resolve_config_path,
)

__all__ = ["build_cli", "main", "resolve_config_path"]

log = logging.getLogger("sluiceway")


@click.command()
@config_option
@click.option("--host", default=None, help="Address to listen on (overrides [server] host).")
@click.option("--port", type=int, default=None, help="Port (overrides [server] port).")
@click.option("--workers", type=int, default=None, help="Worker processes (overrides [server]).")
@click.option("--log-format", type=click.Choice(["text", "json"]), default=None,
              help="Log lines as text or JSON objects (overrides [server] log_format).")
@debug_option
def serve(
    config_path: str | None, host: str | None, port: int | None, workers: int | None,
    log_format: str | None, debug: bool,
) -> None:
    """Serve the gateway on hypercorn until SIGTERM or Ctrl-C."""
    from ..http.app import Gateway
    from ..http.server import run

    configure_logging(debug, log_format or "text")
    path = resolve_config_path(config_path)
    overrides = {
        k: v for k, v in (("host", host), ("port", port), ("workers", workers),
                          ("log_format", log_format)) if v is not None
    }

    def configured() -> Config:
        config = load_config(path)
        if overrides:
            config = msgspec.structs.replace(
                config,
                server=validate_options(
                    {**msgspec.to_builtins(config.server, enc_hook=builtin), **overrides},
                    ServerSettings,
                    source="command line",
                    key="server",
                ),
            )
        return config

    try:
        config = configured()
        if config.server.log_format != (log_format or "text"):
            configure_logging(debug, config.server.log_format)
        # Build once here so that configuration and plugin errors stop us before
        # any socket is bound. With several workers each builds its own after the fork.
        first: Gateway | None = Gateway(config)
    except StartupError as exc:
        fail(exc, debug)
        return

    def build() -> Gateway:
        nonlocal first
        if first is not None and config.server.workers <= 1:
            gateway, first = first, None
            return gateway
        return Gateway(configured())

    sys.exit(run(build, config.server))


def _describe(config: Config) -> dict[str, Any]:
    """The stack, with each provider built (and closed again) to find what it
    serves: a factory that fails fails the check, as it would fail startup."""
    from ..calls.topology import open_providers
    from ..http.app import Gateway
    from ..plugins.info import describe

    gateway = Gateway(config)

    async def built() -> dict[str, object]:
        async with contextlib.AsyncExitStack() as stack:
            # As at startup: what providers share (a browser for logins) outlives them.
            await stack.enter_async_context(gateway.sessions.lifespan())
            opened = await open_providers(gateway._provider_plans, gateway, stack)
            return {o.settings.name: o.provider for o in opened}

    return describe(gateway, asyncio.run(built()))


@click.command()
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print the resolved stack as JSON.")
@debug_option
def check(config_path: str | None, as_json: bool, debug: bool) -> None:
    """Validate the configuration and print the resolved stack (secrets redacted)."""
    configure_logging(debug)
    logging.getLogger("sluiceway").setLevel(logging.WARNING)
    try:
        description = _describe(load_config(resolve_config_path(config_path)))
    except StartupError as exc:
        fail(exc, debug)
        return
    if as_json:
        click.echo(json.dumps(description, indent=2))
        return
    click.echo(f"config: {description['config']}: OK")
    click.echo("plugins:")
    for p in description["plugins"]:
        click.echo(f"  {p['name']:<16} {p['distribution']} {p['version']}")
    click.echo("providers:")
    for p in description["providers"]:
        models = (
            ", ".join(
                m["name"] if m["name"] == m["upstream"] else f"{m['name']} -> {m['upstream']}"
                for m in p["models"]
            )
            or "(provider defaults)"
        )
        click.echo(f"  {p['name']:<16} type={p['type']}  models: {models}")
        click.echo(f"      serves: {', '.join(p['endpoints'])}")
        for key, value in p["options"].items():
            click.echo(f"      {key} = {value!r}")
    click.echo(f"auth: {description['auth']['chain']}")
    click.echo("routes:")
    for route in description["routes"]:
        click.echo(f"  {route}")
    if description["middleware"]:
        click.echo("middleware:")
        for m in description["middleware"]:
            click.echo(f"  {m}")
    if description["call_policies"]:
        click.echo("call policies (in the order they admit a call):")
        for policy in description["call_policies"]:
            click.echo(f"  {policy['name']:<16} {', '.join(policy['kinds'])} "
                       f"({policy['plugin']})")
    server = description["server"]
    click.echo(f"server: {server['host']}:{server['port']} workers={server['workers']}")


@click.command("plugins")
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def plugins_command(config_path: str | None, as_json: bool) -> None:
    """List installed plugins and which ones the configuration loads."""
    from ..plugins.loading import installed_plugins, load_plugins

    path = resolve_config_path(config_path)
    installed = installed_plugins()
    listed: list[str] = []
    loaded: dict[str, Any] = {}
    error = None
    if Path(path).exists():
        try:
            config = load_config(path)
            listed = list(config.gateway.plugins)
            loaded = {p.name: p for p in load_plugins(listed, source=config.source).loaded}
        except StartupError as exc:
            error = str(exc)
    rows = []
    for name in sorted(set(installed) | set(listed)):
        entries = installed.get(name, [])
        rows.append(
            {
                "name": name,
                "distribution": entries[0].distribution if entries else None,
                "version": entries[0].version if entries else None,
                "listed": name in listed,
                "loaded": name in loaded,
                "hooks": loaded[name].hooks if name in loaded else [],
                "import_ms": round(loaded[name].import_ms, 2) if name in loaded else None,
            }
        )
    if as_json:
        click.echo(json.dumps({"config": path, "plugins": rows, "error": error}, indent=2))
        return
    for row in rows:
        state = (
            "loaded" if row["loaded"] else "listed, NOT INSTALLED" if row["listed"] else "installed"
        )
        dist = f"{row['distribution']} {row['version']}" if row["distribution"] else "-"
        click.echo(f"{row['name']:<16} {dist:<32} {state}")
    if error:
        click.echo(f"error: {error}", err=True)
        sys.exit(2)


class _Commands(click.Group):
    """The top-level group: keeps ``--config`` for its command, and turns an unknown
    command that an installed but unlisted plugin provides into how to enable it."""

    def __init__(self, *args: Any, config_path: str | None, listed: Sequence[str],
                 load_error: StartupError | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.config_path = config_path
        self.listed = list(listed)
        self.load_error = load_error

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        name = args[0] if args else ""
        if name and not name.startswith("-") and self.get_command(ctx, name) is None:
            if self.load_error is not None:
                # Its plugins' commands are unknown: say why, not what to enable.
                ctx.fail(f"no command {name!r} here; plugin commands come from the "
                         f"configuration, which did not load: {self.load_error}")
            hint = _unlisted_provider_of(name, self.listed, resolve_config_path(self.config_path))
            if hint:
                ctx.fail(hint)
        return super().resolve_command(ctx, args)


def _unlisted_provider_of(command: str, listed: Sequence[str], path: str) -> str | None:
    """What to do when ``command`` comes from an installed plugin the configuration
    does not list; ``None`` if no installed plugin has it. Only on this error path
    are unlisted plugins imported, one at a time, to ask for their commands."""
    from ..plugins.loading import installed_plugins, load_plugins

    for name in sorted(set(installed_plugins()) - set(listed)):
        scratch = click.Group()
        try:
            # call_each is lazy: each hook runs as it is iterated.
            for _ in load_plugins([name]).call_each("register_commands", cli=scratch):
                pass
        except Exception:  # a broken plugin does not provide the hint; it is not ours to report
            log.debug("plugin %r could not be asked for its commands", name, exc_info=True)
            continue
        if command in scratch.commands:
            where = path if Path(path).exists() else f"{path} (not found)"
            plugins = ", ".join(f'"{p}"' for p in [*listed, name])
            return (
                f"{command!r} is a command of the {name!r} plugin, which {where} does not "
                f"enable. Add it to [gateway] plugins (plugins = [{plugins}]), or name a "
                f"configuration that lists it: sluiceway --config FILE {command} ..."
            )
    return None


def build_cli(config_path: str | None = None) -> click.Group:
    """The CLI with every configured plugin's commands added (``register_commands``).

    Plugin errors are not raised here, so ``check`` can still report them.
    """
    from ..plugins.loading import load_plugins

    path = resolve_config_path(config_path)
    config: Config | None = None
    load_error: StartupError | None = None
    if Path(path).exists():
        try:
            config = load_config(path)
        except StartupError as exc:
            log.debug("plugin commands unavailable: %s", exc)
            load_error = exc

    @click.pass_context
    def remember_config(ctx: click.Context, config_path: str | None) -> None:
        if config_path:
            ctx.meta[CONFIG_META_KEY] = config_path

    cli = _Commands(
        "sluiceway",
        callback=remember_config,
        help="sluiceway: an LLM API gateway.",
        context_settings={"help_option_names": ["-h", "--help"]},
        config_path=config_path,
        listed=config.gateway.plugins if config is not None else (),
        load_error=load_error,
    )
    config_option(cli)
    click.version_option(package_name="sluiceway")(cli)
    from .sessions import sessions_group

    for command in (serve, check, plugins_command, sessions_group):
        cli.add_command(command)
    if config is not None:
        try:
            plugin_set = load_plugins(config.gateway.plugins, source=config.source)
            core_commands = dict(cli.commands)
            for plugin, _ in plugin_set.call_each("register_commands", cli=cli):
                for name, command in core_commands.items():
                    if cli.commands.get(name) is not command:
                        log.warning("plugin %r may not replace the %r command", plugin.name, name)
                        cli.add_command(command, name)
        except StartupError as exc:
            log.debug("plugin commands unavailable: %s", exc)
    return cli


def _config_from_argv(argv: Sequence[str]) -> str | None:
    """The configuration the command will use: the last ``--config`` given, since a
    command's own comes after the one before it, and wins."""
    found = None
    for index, arg in enumerate(argv):
        if arg == "--config" and index + 1 < len(argv):
            found = argv[index + 1]
        elif arg.startswith("--config="):
            found = arg.split("=", 1)[1]
    return found


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``sluiceway`` command."""
    args = list(sys.argv[1:] if argv is None else argv)
    build_cli(_config_from_argv(args))(args=args, prog_name="sluiceway")
