"""Plugin selection and loading against really installed distributions.

The distributions are built and installed by pip into a temporary target
directory, which the tests put on ``sys.path`` (in-process) or ``PYTHONPATH``
(for the CLI): entry points are discovered from real installed metadata, never
from a patched registry.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import openai
import pytest

import sluiceway
from sluiceway.testing import RunningServer

GOOD = '''
"""A throwaway provider plugin that echoes the last user message."""
import sluiceway
from sluiceway.wire.openai import completion_object, chunk_object, usage_object

IMPORTED = True


class Echo:
    def __init__(self, prefix):
        self.prefix = prefix

    async def chat(self, request):
        text = self.prefix + request.messages[-1]["content"]
        return completion_object(
            id="chatcmpl-echo", model=request.upstream_model,
            choices=[{"index": 0, "message": {"role": "assistant", "content": text},
                      "finish_reason": "stop"}],
            usage=usage_object(1, 1),
        )

    async def stream(self, request):
        text = self.prefix + request.messages[-1]["content"]
        for word in text.split():
            yield chunk_object(id="c", model=request.upstream_model, created=0,
                               choices=[{"index": 0, "delta": {"content": word + " "}}])

    async def aclose(self):
        pass


@sluiceway.hookimpl
def register_provider_types(register):
    register(sluiceway.ProviderType("echo", lambda ctx: Echo("echo: ")))
'''

PACKAGES = {
    # name: (entry-point name, module source)
    "sluiceway-testecho": ("testecho", GOOD),
    "sluiceway-testbroken": ("testbroken", "raise ZeroDivisionError('broken on purpose')\n"),
    "sluiceway-testdupe": (
        "testdupe",
        textwrap.dedent("""
        import sluiceway

        @sluiceway.hookimpl
        def register_provider_types(register):
            register(sluiceway.ProviderType("echo", lambda ctx: None))
    """),
    ),
    "sluiceway-testtypo": (
        "testtypo",
        textwrap.dedent("""
        import sluiceway

        @sluiceway.hookimpl
        def register_provider_typos(register):
            pass
    """),
    ),
    "sluiceway-testclash-a": ("testclash", "import sluiceway\n"),
    "sluiceway-testclash-b": ("testclash", "import sluiceway\n"),
    "sluiceway-testunlisted": ("testunlisted", "raise RuntimeError('must never be imported')\n"),
    "sluiceway-testfailstart": (
        "testfailstart",
        textwrap.dedent("""
        import sluiceway

        def fail(ctx):
            raise RuntimeError("upstream credentials rejected")

        @sluiceway.hookimpl
        def register_provider_types(register):
            register(sluiceway.ProviderType("failing", fail))
    """),
    ),
}


def _write_package(root: Path, dist: str, ep_name: str, source: str) -> Path:
    module = dist.replace("-", "_")
    pkg = root / dist
    pkg.mkdir()
    (pkg / f"{module}.py").write_text(source)
    (pkg / "pyproject.toml").write_text(
        textwrap.dedent(f"""
        [build-system]
        requires = ["setuptools"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "{dist}"
        version = "0.0.1"

        [project.entry-points.sluiceway]
        {ep_name} = "{module}"

        [tool.setuptools]
        py-modules = ["{module}"]
    """)
    )
    return pkg


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build and install the throwaway plugin distributions with pip into one target."""
    root = tmp_path_factory.mktemp("plugin-src")
    target = tmp_path_factory.mktemp("plugin-site")
    sources = [_write_package(root, d, ep, src) for d, (ep, src) in PACKAGES.items()]
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            *map(str, sources),
        ],
        check=True,
        capture_output=True,
    )
    return target


@pytest.fixture
def on_path(plugin_site: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.syspath_prepend(str(plugin_site))
    yield plugin_site
    for name in list(sys.modules):
        if name.startswith("sluiceway_test"):
            del sys.modules[name]


def _config(*plugins: str) -> dict[str, object]:
    return {
        "gateway": {"plugins": list(plugins)},
        "providers": [{"name": "e", "type": "echo", "models": ["echo-1"]}],
    }


def test_installed_plugin_serves_a_model(
    on_path: Path, gateway_factory: Callable[..., RunningServer]
) -> None:
    server = gateway_factory(_config("testecho"))
    client = openai.OpenAI(api_key="x", base_url=server.base_url)
    reply = client.chat.completions.create(
        model="echo-1", messages=[{"role": "user", "content": "hello there"}]
    )
    assert reply.choices[0].message.content == "echo: hello there"
    words = [
        chunk.choices[0].delta.content
        for chunk in client.chat.completions.create(
            model="echo-1", messages=[{"role": "user", "content": "a b"}], stream=True
        )
    ]
    assert "".join(w or "" for w in words) == "echo: a b "
    loaded = {p.name: p for p in server.gateway.plugins.loaded}
    assert loaded["testecho"].distribution == "sluiceway-testecho"
    assert loaded["testecho"].version == "0.0.1"
    assert loaded["testecho"].hooks == ["register_provider_types"]


def test_unlisted_plugins_are_never_imported(on_path: Path) -> None:
    # sluiceway-testunlisted raises on import; listing only testecho must not touch it.
    gateway = sluiceway.create_app(_config("testecho"))
    assert "sluiceway_testunlisted" not in sys.modules
    assert "testunlisted" not in gateway.plugins.names


@pytest.mark.parametrize(
    ("plugins", "expected"),
    [
        (("tsetecho",), "plugin 'tsetecho' is not installed. Did you mean 'testecho'?"),
        (
            ("testbroken",),
            "plugin 'testbroken' (sluiceway-testbroken 0.0.1) failed to import: "
            "ZeroDivisionError: broken on purpose",
        ),
        (
            ("testecho", "testdupe"),
            "plugin 'testdupe' registers provider type 'echo', already registered by plugin "
            "'testecho'",
        ),
        (
            ("testtypo",),
            "plugin 'testtypo' implements 'register_provider_typos', which is not a sluiceway "
            "hook. Did you mean 'register_provider_types'?",
        ),
        (("testclash",), "plugin name 'testclash' is provided by both"),
        (("testecho", "testecho"), "plugin 'testecho' is listed twice"),
    ],
)
def test_startup_errors_name_the_plugin(
    on_path: Path, plugins: tuple[str, ...], expected: str
) -> None:
    with pytest.raises(sluiceway.PluginError) as info:
        sluiceway.create_app(_config(*plugins))
    assert expected in str(info.value)


def test_missing_plugin_names_the_package_to_install(on_path: Path) -> None:
    with pytest.raises(sluiceway.PluginError) as info:
        sluiceway.create_app(_config("nosuchplugin"))
    message = str(info.value)
    assert "gateway.plugins[0]" in message
    assert "pip install sluiceway-nosuchplugin" in message
    assert "testecho" in message  # the installed ones are listed


def _cli(plugin_site: Path, *args: str, config: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(plugin_site)}
    return subprocess.run(
        [sys.executable, "-m", "sluiceway.cli", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_cli_reports_a_broken_plugin_without_a_traceback(plugin_site: Path, tmp_path: Path) -> None:
    config = tmp_path / "plugins.toml"
    config.write_text('[gateway]\nplugins = ["testbroken"]\n')
    result = _cli(plugin_site, "check", config=config)
    assert result.returncode == 2
    assert "failed to import: ZeroDivisionError: broken on purpose" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_plugins_lists_installed_and_loaded(plugin_site: Path, tmp_path: Path) -> None:
    config = tmp_path / "plugins.toml"
    config.write_text(
        '[gateway]\nplugins = ["testecho"]\n\n'
        '[[providers]]\nname = "e"\ntype = "echo"\nmodels = ["echo-1"]\n'
    )
    result = _cli(plugin_site, "plugins", config=config)
    assert result.returncode == 0, result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines()}
    assert lines["testecho"].endswith("loaded")
    assert "sluiceway-testecho 0.0.1" in lines["testecho"]
    assert lines["testunlisted"].endswith("installed")
    check = _cli(plugin_site, "check", config=config)
    assert check.returncode == 0, check.stderr
    assert "e                type=echo  models: echo-1" in check.stdout


def test_a_served_plugin_gateway_answers_over_http(
    on_path: Path, gateway_factory: Callable[..., RunningServer]
) -> None:
    server = gateway_factory(_config("testecho"))
    response = httpx.get(server.url + "/v1/models")
    assert response.json()["data"] == [
        {"id": "echo-1", "object": "model", "created": 0, "owned_by": "e"}
    ]


def test_serve_reports_a_provider_that_fails_to_start(plugin_site: Path, tmp_path: Path) -> None:
    config = tmp_path / "plugins.toml"
    config.write_text(
        '[gateway]\nplugins = ["testfailstart"]\n\n[server]\nport = 0\n\n'
        '[[providers]]\nname = "f"\ntype = "failing"\nmodels = ["m"]\n'
    )
    result = _cli(plugin_site, "serve", config=config)
    assert result.returncode == 2, result.stderr
    assert (
        "provider 'f' (type 'failing') failed to start: RuntimeError: upstream credentials "
        "rejected" in result.stderr
    )
    assert "Traceback" not in result.stderr
