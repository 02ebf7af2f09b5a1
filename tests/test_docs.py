"""The documentation is checked against the code, as datasette's tests/test_docs.py does.

* Every hook in :mod:`sluiceway.plugins.hookspecs` has a ``docs/hooks.md`` section headed
  by its exact signature, and a ``test_hook_<name>`` in tests/test_hooks.py.
* Every code example marked ``<!-- example: PATH... -->`` in the docs is the
  tested code at PATH, character for character.
* Every key of the core's config tables and every CLI option is documented;
  every TOML example is a valid configuration; every configuration error
  quoted in the docs is the message the code really gives.
* Every relative link in the docs points at a file that exists.
"""

from __future__ import annotations

import ast
import inspect
import re
import textwrap
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import msgspec
import pytest

import sluiceway
from sluiceway.cli import build_cli
from sluiceway.config import AuthSettings, GatewaySettings, ModelEntry, ServerSettings, parse_config
from sluiceway.plugins import hookspecs

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
HOOKS_MD = DOCS / "hooks.md"
CONFIGURATION_MD = DOCS / "configuration.md"
OPERATOR_MD = DOCS / "operator.md"
TEST_HOOKS = ROOT / "tests" / "test_hooks.py"
DOC_FILES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]


def _hookspecs() -> dict[str, Callable[..., Any]]:
    """The functions pluggy treats as specs: those the ``hookspec`` marker tagged."""
    marker = f"{hookspecs.hookspec.project_name}_spec"
    return {
        name: fn for name, fn in vars(hookspecs).items()
        if inspect.isfunction(fn) and hasattr(fn, marker)
    }


HOOKS = _hookspecs()


def _signature(name: str) -> str:
    return f"{name}({', '.join(inspect.signature(HOOKS[name]).parameters)})"


def _sections(text: str) -> dict[str, str]:
    """``## heading`` -> the text up to the next ``## `` heading."""
    parts = re.split(r"^## (.+)$", text, flags=re.MULTILINE)
    return {heading.strip(): body for heading, body in zip(parts[1::2], parts[2::2], strict=True)}


def _test_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}


def test_there_are_hooks() -> None:
    assert {"register_provider_types", "lifespan"} <= set(HOOKS)


@pytest.mark.parametrize("name", sorted(HOOKS))
def test_hook_is_documented_under_its_signature(name: str) -> None:
    sections = _sections(HOOKS_MD.read_text())
    assert _signature(name) in sections, f"docs/hooks.md needs a heading: ## {_signature(name)}"
    body = sections[_signature(name)]
    assert "Used by:" in body, f"## {_signature(name)} needs a 'Used by:' line"
    assert "<!-- example:" in body, f"## {_signature(name)} needs a tested example"


def test_every_documented_hook_exists() -> None:
    documented = [h for h in _sections(HOOKS_MD.read_text()) if re.fullmatch(r"\w+\(.*\)", h)]
    assert sorted(documented) == sorted(_signature(name) for name in HOOKS)


@pytest.mark.parametrize("name", sorted(HOOKS))
def test_hook_has_a_test(name: str) -> None:
    assert f"test_hook_{name}" in _test_names(TEST_HOOKS), f"tests/test_hooks.py: test_hook_{name}"


def test_every_hook_test_names_a_hook() -> None:
    names = _test_names(TEST_HOOKS)
    tested = {n.removeprefix("test_hook_") for n in names if n.startswith("test_hook_")}
    assert tested == set(HOOKS)


# -- examples ----------------------------------------------------------------

_EXAMPLE = re.compile(
    r"<!-- example: (?P<ref>\S+) -->\s*\n```\w*\n(?P<code>.*?)^```", re.MULTILINE | re.DOTALL
)


def _source_of(ref: str) -> str:
    """``PATH`` (whole file), ``PATH#REGION`` (between ``# [docs:REGION]`` and
    ``# [/docs:REGION]``) or ``PATH::NAME`` (a top-level def or class)."""
    if "::" in ref:
        path, name = ref.split("::")
        text = (ROOT / path).read_text()
        for node in ast.parse(text).body:
            if getattr(node, "name", None) == name:
                first = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))])
                lines = text.splitlines(keepends=True)[first - 1 : node.end_lineno]
                return "".join(lines)
        raise AssertionError(f"{path} has no top-level {name}")
    if "#" in ref:
        path, region = ref.split("#")
        text = (ROOT / path).read_text()
        match = re.search(
            rf"^# \[docs:{re.escape(region)}\]\n(.*?)^# \[/docs:{re.escape(region)}\]",
            text, re.MULTILINE | re.DOTALL,
        )
        assert match, f"{path} has no region {region}"
        return match.group(1)
    return (ROOT / ref).read_text()


def _examples() -> list[tuple[str, str, str]]:
    found = []
    for doc in DOC_FILES:
        for match in _EXAMPLE.finditer(doc.read_text()):
            found.append((doc.name, match.group("ref"), match.group("code")))
    return found


def test_examples_are_marked() -> None:
    assert len(_examples()) >= len(HOOKS)


@pytest.mark.parametrize(("doc", "ref", "code"), _examples(), ids=lambda v: str(v)[:60])
def test_example_is_the_tested_code(doc: str, ref: str, code: str) -> None:
    expected = textwrap.dedent(_source_of(ref)).strip("\n")
    assert code.strip("\n") == expected, f"{doc}: the example from {ref} is out of date"


# -- configuration -------------------------------------------------------------

@pytest.mark.parametrize("struct", [GatewaySettings, ServerSettings, AuthSettings, ModelEntry])
def test_every_config_key_is_documented(struct: type[msgspec.Struct]) -> None:
    text = CONFIGURATION_MD.read_text()
    missing = [f.name for f in msgspec.structs.fields(struct) if f"`{f.name}`" not in text]
    assert not missing, f"docs/configuration.md does not mention {struct.__name__}: {missing}"


def _toml_blocks() -> list[tuple[str, str]]:
    return [
        (doc.name, block)
        for doc in DOC_FILES
        # Included files (an example plugin's pyproject.toml) are not configuration.
        for block in re.findall(
            r"^```toml\n(.*?)^```", _EXAMPLE.sub("", doc.read_text()), re.MULTILINE | re.DOTALL
        )
    ]


@pytest.mark.parametrize(("doc", "block"), _toml_blocks(), ids=lambda v: str(v)[:40])
def test_toml_examples_are_valid_configuration(doc: str, block: str) -> None:
    parse_config(tomllib.loads(block), source=doc)


@pytest.mark.parametrize("data", [
    {"server": {"port": "eighty"}},
    {"server": {"prot": 8080}},
    {"providers": [{"name": "a", "type": "mock", "models": [{"nam": "x"}]}]},
    {"plugin": {"api-keys": {}}},
])
def test_quoted_config_errors_are_real(data: dict[str, Any]) -> None:
    with pytest.raises(sluiceway.ConfigError) as error:
        parse_config(data, source="plugins.toml")
    assert str(error.value) in CONFIGURATION_MD.read_text()


def test_every_cli_option_is_documented() -> None:
    text = OPERATOR_MD.read_text() + CONFIGURATION_MD.read_text()
    cli = build_cli(str(ROOT / "no-such-plugins.toml"))
    for name, command in cli.commands.items():
        assert f"sluiceway {name}" in text, f"command {name} is not documented"
        for param in command.params:
            if isinstance(param, click.Option) and not param.hidden:
                for opt in param.opts:
                    assert opt in text, f"option {opt} of `sluiceway {name}` is not documented"


def test_config_env_var_is_documented() -> None:
    from sluiceway.cli.options import CONFIG_ENV

    assert CONFIG_ENV in CONFIGURATION_MD.read_text()


# -- links ---------------------------------------------------------------------

@pytest.mark.parametrize("doc", DOC_FILES, ids=lambda p: p.name)
def test_relative_links_resolve(doc: Path) -> None:
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", doc.read_text()):
        if "://" in target or target.startswith("mailto:"):
            continue
        assert (doc.parent / target).exists(), f"{doc.name}: broken link {target}"
