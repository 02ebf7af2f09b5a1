"""Plugins, from entry point to built object: ``hookspecs`` (the hooks), ``loading``
(finding and importing the listed plugins), ``registry`` (what their hooks
registered), ``assembly`` (building each registered part) and ``info`` (what a
built gateway is made of)."""

from .loading import (
    LoadedPlugin,
    PluginSet,
    installed_plugins,
    load_plugins,
)

__all__ = [
    "LoadedPlugin",
    "PluginSet",
    "installed_plugins",
    "load_plugins",
]
