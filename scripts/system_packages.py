"""The Debian packages a purpose needs, one per line (read by bootstrap.sh).

    python3 scripts/system_packages.py test
    python3 scripts/system_packages.py serve [CONFIG]

``test`` needs every package in scripts/apt-packages.txt (the suite starts
redis-server and drives Chromium). ``serve`` needs only what the configuration
runs in the gateway's own process: Chromium when ``[gateway] plugins`` lists
``webchat`` (web logins drive a browser). Redis is never installed to serve: a
configuration that names a Redis URL names a server someone runs. A missing
or unreadable configuration file (the embedded default stack) needs nothing.
Standard library only: it runs before the virtualenv exists.
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

__all__ = ["needed"]

LISTED = Path(__file__).with_name("apt-packages.txt")
# Plugins that run a system program in the gateway's process, and its package.
SERVE_NEEDS = {"webchat": "chromium"}


def listed() -> list[str]:
    """Every package in apt-packages.txt."""
    lines = LISTED.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def needed(purpose: str, config: Path | None = None) -> list[str]:
    """The packages ``purpose`` (``"test"`` or ``"serve"``) needs."""
    if purpose == "test":
        return listed()
    if purpose != "serve":
        raise ValueError(f"unknown purpose {purpose!r}: expected test or serve")
    try:
        data = tomllib.loads(config.read_text(encoding="utf-8")) if config else {}
    except (OSError, tomllib.TOMLDecodeError):
        return []  # the gateway itself reports a bad file, with its own words
    gateway = data.get("gateway")
    plugins = gateway.get("plugins", []) if isinstance(gateway, dict) else []
    return sorted({SERVE_NEEDS[p] for p in plugins if isinstance(p, str) and p in SERVE_NEEDS})


if __name__ == "__main__":
    purpose = sys.argv[1] if len(sys.argv) > 1 else "test"
    config = Path(sys.argv[2]) if len(sys.argv) > 2 else None
    try:
        print("\n".join(needed(purpose, config)))
    except ValueError as exc:
        sys.exit(f"system_packages: {exc}")
