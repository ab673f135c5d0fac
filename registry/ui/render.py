"""Rendering helpers of the web UI: the Jinja2 environment, a form's view and its HTML.

Kept apart from the routes (`registry.ui.pages`) so the form HTML of any entity can be rendered
without a database or an app (the snapshot tests do exactly that).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jinja2
from markupsafe import Markup

from open_registry.core.i18n import Translator
from open_registry.generators.formdata import FormValues, row_indices
from open_registry.generators.forms import FormField, Option

#: references with more live records than this become a text box with suggestions
MAX_REFERENCE_OPTIONS = 500


def build_environment(extra_dirs: Sequence[Any] = ()) -> jinja2.Environment:
    """The UI's templates (`registry/templates`), autoescaped; templates in `extra_dirs` (the
    plugins' `register_templates`) come first, so they add widgets or replace pages."""
    loaders: list[jinja2.BaseLoader] = [jinja2.FileSystemLoader(str(d)) for d in extra_dirs]
    loaders.append(jinja2.PackageLoader("open_registry.core", "templates"))
    env = jinja2.Environment(
        loader=jinja2.ChoiceLoader(loaders),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["input_id"] = input_id
    return env


def input_id(name: str) -> str:
    """The HTML id of the input named `name` (`admins.0.name` -> `f-admins-0-name`)."""
    return "f-" + name.replace(".", "-")


@dataclass(frozen=True)
class ReferenceChoices:
    """The records a reference field may point at (value, label), and whether that is all."""

    options: tuple[Option, ...]
    complete: bool = True


@dataclass
class FormView:
    """What the form templates ask about while rendering: values, errors, rows, choices."""

    fields: Sequence[FormField]
    values: FormValues = field(default_factory=dict)
    errors: Mapping[str, list[str]] = field(default_factory=dict)
    references: Mapping[str, ReferenceChoices] = field(default_factory=dict)
    new: bool = True

    def value(self, name: str) -> str:
        v = self.values.get(name, "")
        return v[-1] if isinstance(v, list) and v else v if isinstance(v, str) else ""

    def chosen(self, name: str) -> list[str]:
        v = self.values.get(name, [])
        return v if isinstance(v, list) else [v]

    def rows(self, f: FormField, name: str) -> list[int]:
        """Row numbers of an array input; a required array starts with one empty row."""
        found = row_indices(self.values, name)
        if found or "__i__" in name:
            return found
        minimum = int(f.attrs.get("min-items", "0"))
        return list(range(max(minimum, 1 if f.required else 0)))

    def next_row(self, f: FormField, name: str) -> int:
        rows = self.rows(f, name)
        return rows[-1] + 1 if rows else 0

    def choices(self, f: FormField, name: str) -> ReferenceChoices:
        """Reference choices, always including the current value (even a dangling one)."""
        found = self.references.get(f.path, ReferenceChoices((), complete=False))
        current = self.value(name)
        if current and all(str(o.value) != current for o in found.options):
            return ReferenceChoices((Option(current, current), *found.options), found.complete)
        return found

    def has_errors(self) -> bool:
        return any(self.errors.values())

    def error_links(self) -> list[tuple[str, str, str]]:
        """(input id, label, message) of every error, for the summary at the top of the form."""
        labels = {}
        for top in self.fields:
            for f in top.walk():
                labels[f.path] = f.label
        out = []
        for name, messages in self.errors.items():
            path = ".".join(p for p in name.split(".") if not p.isdigit())
            for m in messages:
                out.append((input_id(name) if name else "", labels.get(path, name), m))
        return out


def render_form(
    env: jinja2.Environment,
    view: FormView,
    t: Translator,
    *,
    action: str,
    version: int | None = None,
) -> Markup:
    """The `<form>` element of a create or edit page (already escaped, safe to embed)."""
    html = env.get_template("form_body.html").render(view=view, t=t, action=action, version=version)
    return Markup(html)


def flat_values(pairs: Sequence[tuple[str, str]], *, skip: tuple[str, ...] = ()) -> FormValues:
    """Submitted pairs as flat form values (repeated names become lists), for showing again."""
    out: dict[str, Any] = {}
    for name, value in pairs:
        if name in skip or name.startswith("_"):
            continue
        if name in out:
            prev = out[name]
            out[name] = [*prev, value] if isinstance(prev, list) else [prev, value]
        else:
            out[name] = value
    return out
