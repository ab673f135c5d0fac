"""The tasks a signed-in person's home page leads with ("Record a vaccination", "Today's
appointments", ...), contributed by plugins.

A plugin adds a `Task` to the app's UI (`app.state.ui.add_task(...)`, from its `prepare_app`);
each task says who it is for with the same `Rule` its page declares (`registry.auth.rules`), so
a task is shown exactly to those who may use it. A task marked `landing` is where people whose
only tasks are landings go from the home page (monitoring and controllers land on the
dashboard); one marked `nav` is also linked in every page's navigation for those it is for.
Titles and help texts are catalog keys (`task.<key>` and `task.<key>.help` in
`registry/locales/`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from fastapi import Request

from open_registry.core.auth.deps import principal_of
from open_registry.core.auth.rules import Rule
from open_registry.core.errors import RegistryError


@dataclass(frozen=True)
class Task:
    """One task of the home page: a link, for those its rule lets in."""

    key: str  # catalog keys task.<key> (title) and task.<key>.help
    href: str  # where it leads (under the UI's prefix, or absolute)
    rule: Rule  # who it is for: the rule of the page it leads to
    order: int = 100  # smaller first
    landing: bool = False  # people with landing tasks only are sent here from the home page
    nav: bool = False  # linked in the navigation of every page too


def allowed(rule: Rule, request: Request) -> bool:
    """Whether `rule` lets the request's caller in (no error raised)."""
    try:
        rule.check(request)
    except RegistryError:
        return False
    return True


def tasks_for(request: Request, tasks: Iterable[Task]) -> list[Task]:
    """The tasks the request's caller may do, in order; none for anonymous visitors."""
    if not principal_of(request).authenticated:
        return []
    return sorted((t for t in tasks if allowed(t.rule, request)), key=lambda t: (t.order, t.key))


def landing_of(tasks: Iterable[Task]) -> Task | None:
    """Where the home page sends someone whose tasks are all landings (else None)."""
    mine = list(tasks)
    if mine and all(t.landing for t in mine):
        return mine[0]
    return None
