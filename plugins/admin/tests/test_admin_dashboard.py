"""The dashboard in real headless Chromium (Debian's /usr/bin/chromium, through
Playwright): sign in with the admin key, create a key, see a request made with it
appear live, revoke it; screenshots of each page go to build/screenshots/, which
the admin README links to."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from sluiceway.testing import RunningServer, wait_until

ADMIN_KEY = "dashboard-admin-key"
SHOTS = Path(__file__).resolve().parents[3] / "build" / "screenshots"


@pytest.fixture
def gateway(tmp_path: Path, gateway_factory: Callable[..., RunningServer],
            monkeypatch: pytest.MonkeyPatch) -> RunningServer:
    monkeypatch.setenv("SLUICEWAY_TEST_ADMIN_KEY", ADMIN_KEY)
    keys = tmp_path / "keys.toml"
    keys.write_text("")
    return gateway_factory({
        "gateway": {"plugins": ["mock", "api-keys", "costs", "admin"]},
        "auth": {"chain": ["api-keys"],
                 "api-keys": {"keys_file": str(keys), "reload_interval": "100ms"}},
        "providers": [{"name": "mock", "type": "mock", "models": ["mock-gpt"]}],
        "plugin": {"admin": {"admin_keys": ["env:SLUICEWAY_TEST_ADMIN_KEY"]},
                   "costs": {"prices": {"mock-gpt": {"input": 1.0, "output": 2.0}}}},
    })


def _chat(gateway: RunningServer, secret: str) -> int:
    answer = httpx.post(gateway.base_url + "/chat/completions", timeout=30,
                        headers={"authorization": f"Bearer {secret}"},
                        json={"model": "mock-gpt", "messages": [{"role": "user",
                                                                 "content": "hello"}]})
    return answer.status_code


def test_sign_in_create_a_key_watch_it_work_and_revoke_it(gateway: RunningServer) -> None:
    from playwright.sync_api import expect, sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium",
                                             args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            problems: list[str] = []
            page.on("console", lambda message: problems.append(message.text)
                    if message.type == "error" else None)
            answer = page.goto(gateway.url + "/admin")
            assert answer is not None and answer.status == 200
            assert "script-src 'sha256-" in answer.headers["content-security-policy"]

            page.get_by_label("Admin key").fill("not the key")
            page.get_by_role("button", name="Sign in").click()
            expect(page.get_by_role("alert")).to_contain_text("not an admin key")
            page.get_by_label("Admin key").fill(ADMIN_KEY)
            page.get_by_role("button", name="Sign in").click()
            expect(page.get_by_role("heading", name="Overview")).to_be_visible()

            page.get_by_role("button", name="Keys").click()
            keys_page = page.locator("#keys")
            keys_page.get_by_label("Name").fill("dash-app")
            keys_page.get_by_label("Team").fill("alpha")
            page.get_by_role("button", name="Create key").click()
            secret = page.locator("#new-secret")
            expect(secret).to_contain_text("sk-sw-")
            made = secret.inner_text().strip()
            row = page.locator("#key-rows tr", has_text="dash-app")
            expect(row).to_contain_text("enabled")
            key_id = row.locator("td").first.inner_text()
            page.screenshot(path=str(SHOTS / "admin-keys.png"), full_page=True)

            # The keys file is re-read within its 100 ms reload interval.
            assert wait_until(lambda: _chat(gateway, made) == 200)
            page.get_by_role("button", name="Overview").click()
            # The request shows up on its own: the overview refreshes every second.
            expect(page.locator("#recent")).to_contain_text(key_id, timeout=5000)
            expect(page.locator("#pools")).to_contain_text("mock")
            # Only traffic: the dashboard's own calls to the admin API are not listed.
            assert "mock-gpt" in page.locator("#recent tr").first.inner_text()
            page.screenshot(path=str(SHOTS / "admin-overview.png"), full_page=True)

            page.get_by_role("button", name="Keys").click()
            page.get_by_role("button", name="Revoke dash-app").click()
            expect(page.locator("#key-rows tr", has_text="dash-app")).to_contain_text("revoked")
            page.get_by_role("button", name="Teams").click()
            expect(page.locator("#team-rows")).to_contain_text("alpha")  # from the key
            teams_page = page.locator("#teams")
            teams_page.get_by_label("Team", exact=True).fill("alpha")
            teams_page.get_by_label("Budget per period ($)").fill("25")
            page.get_by_role("button", name="Save team").click()
            expect(page.locator("#team-rows tr", has_text="alpha")).to_contain_text("$25")
            page.screenshot(path=str(SHOTS / "admin-teams.png"), full_page=True)
            page.get_by_role("button", name="Sessions").click()
            expect(page.get_by_role("heading", name="Sessions")).to_be_visible()
            page.screenshot(path=str(SHOTS / "admin-sessions.png"), full_page=True)
            assert not [p for p in problems if "401" not in p], problems
        finally:
            browser.close()
    assert wait_until(lambda: _chat(gateway, made) == 401)
    for name in ("admin-keys.png", "admin-overview.png", "admin-teams.png",
                 "admin-sessions.png"):
        assert (SHOTS / name).stat().st_size > 1000
