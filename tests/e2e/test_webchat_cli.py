"""``sluiceway sessions warm|list|clear|rotate-key`` as an operator runs them:
separate processes, a configuration file, real Chromium against the demo site."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from sluiceway_webchat_demo import DemoSite

from sluiceway.testing import RunningServer

from .webchat_support import ENV, USERS

CONFIG = """
[gateway]
plugins = ["webchat-demo"]

[sessions]
path = "state"

{providers}
"""

PROVIDER = """
[[providers]]
name = "{name}"
type = "webchat-demo"
base_url = "{url}"
models = ["{name}-chat"]

[providers.login]
url = "/login"
fields = {{ "#email" = "env:DEMO_{user}_EMAIL", "#password" = "env:DEMO_{user}_PASSWORD" }}
submit = "#submit"
success_url = "**/app"
success_selector = "body[data-ready='1']"
keep_cookies = ["sid"]
keep_local_storage = ["access_token"]
bearer_from = "local_storage:access_token"
"""


def _sluiceway(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "SLUICEWAY_SESSION_KEY"}
    return subprocess.run(
        [sys.executable, "-m", "sluiceway.cli", "sessions", *args, "--config", str(config)],
        capture_output=True, text=True, timeout=100, env={**env, **ENV},
    )


def _secrets_of(site: DemoSite) -> list[str]:
    return [*site._sessions, *site._tokens]


def test_sessions_commands(serve_asgi: Callable[..., RunningServer], tmp_path: Path) -> None:
    site = DemoSite(USERS)
    url = serve_asgi(site).url
    config = tmp_path / "plugins.toml"
    config.write_text(CONFIG.format(providers="".join(
        PROVIDER.format(name=name, url=url, user=name.upper()) for name in ("alice", "bob"))))

    nothing = _sluiceway(config, "list")
    assert nothing.returncode == 0 and "no sessions stored" in nothing.stdout
    assert not (tmp_path / "state").exists()

    warm = _sluiceway(config, "warm")
    assert warm.returncode == 0, warm.stderr
    rows = {line.split()[0]: line.split() for line in warm.stdout.splitlines()[1:]}
    assert sorted(rows) == ["alice", "bob"]
    assert all(row[1] == "valid" for row in rows.values()), warm.stdout
    assert site.logins == 2

    # Warm again: both sessions are valid, so nobody logs in.
    again = _sluiceway(config, "warm", "alice")
    assert again.returncode == 0 and "valid" in again.stdout
    assert site.logins == 2

    listed = _sluiceway(config, "list")
    assert listed.returncode == 0, listed.stderr
    assert re.search(r"^alice\s+valid\s+11h5\dm", listed.stdout, re.MULTILINE), listed.stdout
    assert re.search(r"^bob\s+valid\s+11h5\dm", listed.stdout, re.MULTILINE)
    as_json = json.loads(_sluiceway(config, "list", "--json").stdout)["sessions"]
    assert [row["provider"] for row in as_json] == ["alice", "bob"]
    assert all(row["expires_at"] > row["created_at"] for row in as_json)
    for output in (warm.stdout, listed.stdout, json.dumps(as_json), warm.stderr, listed.stderr):
        for secret in _secrets_of(site):
            assert secret not in output

    key_file = tmp_path / "state" / "session.key"
    old_key = key_file.read_text().split()
    rotated = _sluiceway(config, "rotate-key")
    assert rotated.returncode == 0, rotated.stderr
    assert "re-encrypted 2 session(s)" in rotated.stdout
    keys = key_file.read_text().split()
    assert len(keys) == 2 and keys[1] == old_key[0] and keys[0] not in rotated.stdout
    after = _sluiceway(config, "list")
    assert after.stdout.count("valid") == 2, after.stdout

    cleared = _sluiceway(config, "clear", "bob")
    assert cleared.stdout.strip() == "bob: cleared"
    remaining = _sluiceway(config, "list").stdout
    assert "alice" in remaining and "bob" not in remaining

    unknown = _sluiceway(config, "warm", "carol")
    assert unknown.returncode == 2 and "not a web-login provider: carol" in unknown.stderr
    assert site.logins == 2
