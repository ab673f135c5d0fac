"""The plugin hook reference (docs/plugins.md) agrees with the hookspecs, hook by hook."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from open_registry.core import hookspecs

ROOT = Path(__file__).parents[1]
DOCS = ROOT / "docs" / "plugins.md"
HOOKS = sorted(
    name
    for name in dir(hookspecs)
    if hasattr(getattr(hookspecs, name), f"{hookspecs.PROJECT}_spec")
)


def declared(hook: str) -> str:
    """`name(param: type, ...) -> return` as the hookspec declares it."""
    sig = inspect.signature(getattr(hookspecs, hook))
    params = ", ".join(f"{p.name}: {p.annotation}" for p in sig.parameters.values())
    return f"{hook}({params}) -> {sig.return_annotation}"


def documented() -> dict[str, str]:
    """Hook name -> the signature in its `### ` heading."""
    out = {}
    for m in re.finditer(r"^### `([a-z_]+)\((.*)\) -> (.*)`$", DOCS.read_text(), re.M):
        out[m.group(1)] = f"{m.group(1)}({m.group(2)}) -> {m.group(3)}"
    return out


def test_the_hook_list_is_complete():
    assert len(HOOKS) >= 18
    assert "before_write" in HOOKS and "send_notification" in HOOKS


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_section_headed_by_its_signature(hook: str):
    assert documented().get(hook) == declared(hook)


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_section_says_when_it_fires_and_shows_an_example(hook: str):
    text = DOCS.read_text()
    start = text.index(f"### `{hook}(")
    end = text.find("\n## ", start + 1)
    nxt = text.find("\n### ", start + 1)
    section = text[start : min(i for i in (end, nxt) if i != -1)]
    assert "**Fires**" in section, hook
    assert "@hookimpl" in section and f"def {hook}(" in section, hook


def test_no_section_documents_a_hook_that_does_not_exist():
    assert set(documented()) <= set(HOOKS)
