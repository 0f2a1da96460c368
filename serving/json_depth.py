"""Where a JSON body nests deeper than the event schema allows, found without a recursive parser.

Deep nesting is refused before anything reads it as objects (pydantic's JSON reader stops
at its recursion limit, Python's ``json`` raises ``RecursionError``); this names the field
that holds it, for the 422, by scanning the body's tokens, so the error path cannot recurse
either. It runs only after a parser has given up.
"""

from __future__ import annotations

import json
import re

from schemas.events import EVENT_NESTING

_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}:,]')


def too_deep_at(body: bytes, max_depth: int) -> tuple[str | int, ...] | None:
    """The path (keys and list positions) to the first container nested deeper than ``max_depth``,
    or None when there is none (or the body is not a JSON text this can follow)."""
    path: list[str | int | None] = []  # per open container: the current key, or the current position
    last_string = b'""'
    for match in _TOKEN.finditer(body):
        token = match.group()
        if token in (b"[", b"{"):
            if len(path) >= max_depth:
                return tuple(p for p in path if p is not None)
            path.append(0 if token == b"[" else None)
        elif token in (b"]", b"}"):
            if not path:
                return None
            path.pop()
        elif token == b",":
            if path and isinstance(path[-1], int):
                path[-1] += 1
        elif token == b":":
            if not path:
                return None
            try:
                path[-1] = json.loads(last_string)
            except ValueError:
                return None
        else:
            last_string = token
    return None


def event_body_too_deep_at(body: bytes) -> tuple[str | int, ...] | None:
    """``too_deep_at`` for an event (``POST /events``) or a list of them (``/events/batch``), the
    body's first character telling which."""
    in_list = body.lstrip()[:1] == b"["
    return too_deep_at(body, EVENT_NESTING + in_list)
