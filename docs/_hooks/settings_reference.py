"""mkdocs hook: the configuration page's reference table, generated from the settings' own fields at build
time, so it cannot drift from the code. A page marks its place with ``<!-- settings-reference -->``."""

from __future__ import annotations

import json
from typing import Any

from pydantic import SecretStr
from pydantic_core import PydanticUndefined

from lambdarec.settings import Settings

MARKER = "<!-- settings-reference -->"


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    return markdown.replace(MARKER, reference()) if MARKER in markdown else markdown


def reference() -> str:
    """One row per setting, in the order ``lambdarec/settings.py`` declares them: its environment variable,
    type, default and description."""
    prefix = Settings.model_config.get("env_prefix", "")
    rows = ["| Variable | Type | Default | Description |", "| --- | --- | --- | --- |"]
    for name, field in Settings.model_fields.items():
        rows.append(f"| `{prefix}{name.upper()}` | {cell(type_name(field.annotation))} | {cell(default_of(field))} "
                    f"| {prose(field.description or '')} |")
    return "\n".join(rows)


def default_of(field: Any) -> str:
    value = field.get_default(call_default_factory=True) if field.default is PydanticUndefined else field.default
    if isinstance(value, SecretStr):
        return "(hidden; see the description)"
    if value is None:
        return "unset"
    if value == "":
        return "empty"
    if isinstance(value, dict | list | tuple | bool):
        return f"`{json.dumps(value)}`"
    return f"`{value}`"


def type_name(annotation: Any) -> str:
    plain = getattr(annotation, "__name__", None) if not getattr(annotation, "__args__", None) else None
    return f"`{plain or str(annotation).replace('typing.', '').replace('pathlib.', '')}`"


def cell(text: str) -> str:
    """Markdown table-safe: one line, pipes escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")


def prose(text: str) -> str:
    """A description's text: angle brackets stay text (``<prefix>.<table>``), not tags."""
    return cell(text).replace("<", "&lt;").replace(">", "&gt;")
