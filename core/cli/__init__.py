"""The ``sluiceway`` command: ``main`` (serve, check, plugins and plugins' commands),
``options`` (what every command shares) and ``sessions`` (``sluiceway sessions``)."""

from .main import (
    build_cli,
    main,
    resolve_config_path,
)

__all__ = [
    "build_cli",
    "main",
    "resolve_config_path",
]
