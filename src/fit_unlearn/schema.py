"""The base of every typed setting: frozen pydantic models that refuse unknown fields, documented field
by field (each field's docstring is its description, rendered by :func:`describe` into docs/config.md and
shown by ``fit-unlearn config``), and one formatter that turns a validation error into one line."""

from __future__ import annotations

import json

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError


class Section(BaseModel):
    """A configuration section: frozen, ``extra="forbid"``, attribute docstrings as field descriptions."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


def format_validation_error(e: ValidationError, source: str) -> str:
    """``source: invalid configuration: loc: message; loc: message`` (one line)."""
    parts = []
    for err in e.errors():
        loc = ".".join(str(x) for x in err["loc"]) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        elif err["type"] == "literal_error":
            msg = f"{msg}, got {err.get('input')!r}"
        parts.append(f"{loc}: {msg}")
    return f"{source}: invalid configuration: " + "; ".join(parts)


def describe(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str, str]]:
    """``(dotted name, default, description)`` for every field of ``model`` and its nested sections."""
    rows = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        ann = field.annotation
        nested = _section_type(ann)
        if nested is not None:
            rows.append((key, "", " ".join((field.description or "").split())))
            rows.extend(describe(nested, f"{key}."))
            continue
        default = field.get_default(call_default_factory=True)
        shown = json.dumps(TypeAdapter(ann).dump_python(default, mode="json"))
        rows.append((key, shown, " ".join((field.description or "").split())))
    return rows


def _section_type(ann) -> type[BaseModel] | None:
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    for arg in getattr(ann, "__args__", ()) or ():  # Optional[Section]
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None


def markdown_table(model: type[BaseModel], prefix: str = "") -> str:
    """A markdown table of :func:`describe`'s rows (section rows in bold)."""
    lines = ["| setting | default | meaning |", "|---|---|---|"]
    for key, default, text in describe(model, prefix):
        name = f"**`{key}`**" if not default else f"`{key}`"
        shown = f"`{default}`" if default else ""
        text = text.replace("|", "\\|")
        lines.append(f"| {name} | {shown} | {text} |")
    return "\n".join(lines)
