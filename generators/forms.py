"""Form fields from an entity schema (pure): a tree of field descriptions that templates render.

`form_fields(entity)` is to HTML forms what `generators.tables` is to tables: one function, the
schema in, a description out, with an override hook like Django's `formfield_callback`. The widget
of a field comes from its type, format and enum; nested objects become fieldsets, arrays become
rows that can be added and removed, reference fields become a choice over the referenced entity.
Titles, descriptions and enum labels come from the schema, translated by `x-registry.i18n`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from open_registry.generators.schema import EntitySchema, field_kind

#: widget_hook(field path, property schema) -> a widget name, or None to keep the generated one.
WidgetHook = Callable[[str, Mapping[str, Any]], str | None]

#: Widgets the shipped templates know; a hook may name others (rendered as text inputs with
#: `data-widget=<name>` so a plugin's script can enhance them).
WIDGETS = (
    "text",
    "number",
    "date",
    "datetime-local",
    "time",
    "email",
    "tel",
    "url",
    "select",
    "checkbox",
    "checkboxes",
    "textarea",
    "json",
    "reference",
    "fieldset",
    "array",
)
_FORMAT_WIDGETS = {
    "date": "date",
    "date-time": "datetime-local",
    "time": "time",
    "email": "email",
    "phone": "tel",
    "uri": "url",
    "url": "url",
}
#: Names of free-text fields that get a textarea even without a long `maxLength`.
DESCRIPTIVE = re.compile(r"(description|notes?|comments?|remarks?|details)$", re.IGNORECASE)
LONG_TEXT = 200


@dataclass(frozen=True)
class Option:
    value: Any
    label: str


@dataclass(frozen=True)
class FormField:
    """One input (or group of inputs) of a generated form."""

    key: str  # property name; "" for the item of an array
    path: str  # dotted schema path without indices, e.g. "admins.mobile"
    widget: str
    kind: str  # value type: string integer number boolean date datetime json object array
    label: str
    required: bool = False  # the schema requires it inside its parent
    input_required: bool = False  # the browser may enforce it (every ancestor is required)
    description: str | None = None
    placeholder: str | None = None
    options: tuple[Option, ...] = ()
    attrs: Mapping[str, str] = field(default_factory=dict)
    children: tuple[FormField, ...] = ()  # members of a fieldset
    item: FormField | None = None  # one row of an array
    reference: tuple[str, str] | None = None  # (entity, field) a reference points at
    schema: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def walk(self) -> list[FormField]:
        """This field and every field below it."""
        out = [self]
        for c in self.children:
            out.extend(c.walk())
        if self.item is not None:
            out.extend(self.item.walk())
        return out


def humanize(name: str) -> str:
    """`operatingHourStart` -> `Operating hour start`."""
    words = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|[_-]+", " ", name).split()
    text = " ".join(w.lower() if i else w[:1].upper() + w[1:] for i, w in enumerate(words))
    return text or name


def translation(entity: EntitySchema, locale: str) -> Mapping[str, Any]:
    """The `x-registry.i18n` block for `locale` (`hi-IN` falls back to `hi`), or empty."""
    for tag in (locale, locale.split("-")[0]):
        if tag in entity.i18n:
            return entity.i18n[tag]
    return {}


def entity_title(entity: EntitySchema, locale: str = "en") -> str:
    return str(translation(entity, locale).get("title") or entity.title)


def entity_description(entity: EntitySchema, locale: str = "en") -> str | None:
    return translation(entity, locale).get("description") or entity.description


def _example(schema: Mapping[str, Any]) -> str | None:
    examples = schema.get("examples")
    if isinstance(examples, list) and examples and not isinstance(examples[0], dict | list):
        value = examples[0]
        return "true" if value is True else "false" if value is False else str(value)
    return None


def _scalar_widget(name: str, schema: Mapping[str, Any], kind: str) -> str:
    if kind == "json":
        return "json"
    if schema.get("enum"):
        return "select"
    if kind == "boolean":
        return "checkbox"
    if kind in ("integer", "number"):
        return "number"
    fmt = schema.get("format")
    if fmt in _FORMAT_WIDGETS:
        return _FORMAT_WIDGETS[fmt]
    max_len = schema.get("maxLength")
    if isinstance(max_len, int) and max_len > LONG_TEXT and "pattern" not in schema:
        return "textarea"
    if max_len is None and DESCRIPTIVE.search(name) and "pattern" not in schema:
        return "textarea"
    return "text"


def _attrs(schema: Mapping[str, Any], kind: str, widget: str) -> dict[str, str]:
    attrs: dict[str, str] = {}
    if widget in ("text", "textarea", "email", "tel", "url"):
        for key, attr in (("maxLength", "maxlength"), ("minLength", "minlength")):
            if isinstance(schema.get(key), int):
                attrs[attr] = str(schema[key])
    if widget == "number":
        for key, attr in (("minimum", "min"), ("maximum", "max")):
            if isinstance(schema.get(key), int | float) and not isinstance(schema[key], bool):
                attrs[attr] = str(schema[key])
        step = schema.get("multipleOf")
        attrs["step"] = str(step) if step else "1" if kind == "integer" else "any"
    if widget in ("datetime-local", "time"):
        attrs["step"] = "1"  # seconds may be given
    return attrs


class _Builder:
    def __init__(
        self,
        entity: EntitySchema,
        locale: str,
        hook: WidgetHook | None,
    ):
        self.hook = hook
        self.labels: Mapping[str, Any] = translation(entity, locale).get("fields", {})
        self.references = {r.path: (r.entity, r.field) for r in entity.references}

    def _label(self, path: str, key: str, schema: Mapping[str, Any]) -> tuple[str, str | None]:
        tr = self.labels.get(path)
        title = tr if isinstance(tr, str) else (tr or {}).get("title")
        desc = None if isinstance(tr, str) else (tr or {}).get("description")
        return (
            str(title or schema.get("title") or humanize(key or path.rsplit(".", 1)[-1])),
            desc or schema.get("description"),
        )

    def _options(self, path: str, schema: Mapping[str, Any]) -> tuple[Option, ...]:
        tr = self.labels.get(path)
        names = (tr or {}).get("enum", {}) if isinstance(tr, dict) else {}
        return tuple(Option(v, str(names.get(str(v), v))) for v in schema.get("enum") or ())

    def build(
        self, key: str, path: str, schema: Mapping[str, Any], *, required: bool, chain: bool
    ) -> FormField:
        kind, _ = field_kind(schema)
        label, desc = self._label(path, key, schema)
        common: dict[str, Any] = {
            "key": key,
            "path": path,
            "label": label,
            "required": required,
            "input_required": required and chain,
            "description": desc,
            "schema": schema,
        }
        types = schema.get("type")
        props = schema.get("properties")
        if kind == "json" and types == "object" and isinstance(props, dict) and props:
            needed = set(schema.get("required") or [])
            children = tuple(
                self.build(
                    k,
                    f"{path}.{k}",
                    s if isinstance(s, dict) else {},
                    required=k in needed,
                    chain=required and chain,
                )
                for k, s in props.items()
            )
            return self._hooked(
                FormField(widget="fieldset", kind="object", **common, children=children)
            )
        items = schema.get("items")
        if kind == "json" and types == "array" and isinstance(items, dict):
            item_kind, _ = field_kind(items)
            if item_kind != "json" and items.get("enum") and path not in self.references:
                common["options"] = self._options(path, items)
                return self._hooked(FormField(widget="checkboxes", kind=item_kind, **common))
            item = self.build("", path, items, required=False, chain=False)
            attrs = {
                a: str(schema[k])
                for k, a in (("minItems", "min-items"), ("maxItems", "max-items"))
                if isinstance(schema.get(k), int)
            }
            return self._hooked(
                FormField(widget="array", kind="array", attrs=attrs, item=item, **common)
            )
        if path in self.references and kind in ("string", "integer"):
            return self._hooked(
                FormField(
                    widget="reference",
                    kind=kind,
                    reference=self.references[path],
                    placeholder=_example(schema),
                    **common,
                )
            )
        value_kind = "time" if kind == "string" and schema.get("format") == "time" else kind
        widget = _scalar_widget(key or path.rsplit(".", 1)[-1], schema, kind)
        return self._hooked(
            FormField(
                widget=widget,
                kind=value_kind,
                placeholder=_example(schema),
                options=self._options(path, schema),
                attrs=_attrs(schema, kind, widget),
                **common,
            )
        )

    def _hooked(self, f: FormField) -> FormField:
        if self.hook is None:
            return f
        widget = self.hook(f.path, f.schema)
        if widget is None or widget == f.widget:
            return f
        return FormField(**{**f.__dict__, "widget": widget})


def form_fields(
    entity: EntitySchema,
    *,
    widget_hook: WidgetHook | None = None,
    locale: str = "en",
) -> tuple[FormField, ...]:
    """The fields of the create/edit form of `entity`, in schema order.

    Internal fields are left out (the server sets them; edits keep their stored values).
    `widget_hook(path, schema)` may return another widget for any field (a plugin's field type).
    """
    builder = _Builder(entity, locale, widget_hook)
    return tuple(
        builder.build(f.name, f.name, f.schema, required=f.required, chain=True)
        for f in entity.fields.values()
        if f.name not in entity.internal
    )
