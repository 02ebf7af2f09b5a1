"""scripts/system_packages.py: what `make serve` and `make test` install from
Debian. Serving the default stack needs no system package at all."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "system_packages.py"


def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("system_packages", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_suite_needs_every_listed_package_and_serving_the_default_needs_none(
    tmp_path: Path,
) -> None:
    packages = load()
    assert packages.needed("test") == ["redis-server", "chromium"]
    assert packages.needed("serve", ROOT / "plugins.toml") == []
    assert packages.needed("serve", None) == []
    assert packages.needed("serve", tmp_path / "absent.toml") == []
    webchat = tmp_path / "webchat.toml"
    webchat.write_text('[gateway]\nplugins = ["openai", "webchat"]\n', encoding="utf-8")
    assert packages.needed("serve", webchat) == ["chromium"]
    # Redis storage names a server someone runs: nothing to install to serve.
    redis = tmp_path / "redis.toml"
    redis.write_text('[gateway]\nplugins = ["limits"]\n[state]\nstorage = "redis://db:6379"\n',
                     encoding="utf-8")
    assert packages.needed("serve", redis) == []


def test_the_script_prints_one_package_a_line_and_refuses_an_unknown_purpose(
    tmp_path: Path,
) -> None:
    listed = subprocess.run([sys.executable, str(SCRIPT), "test"], capture_output=True,
                            text=True, check=True)
    assert listed.stdout.split() == ["redis-server", "chromium"]
    wrong = subprocess.run([sys.executable, str(SCRIPT), "deploy"], capture_output=True,
                           text=True)
    assert wrong.returncode == 1
    assert "unknown purpose 'deploy'" in wrong.stderr and "Traceback" not in wrong.stderr
