"""An erasure receipt held against the disk: every file still holding the user must be a place it names, with a time.

``tests.support.byte_scan.scan`` finds the files; ``unaccounted`` says which hits
the receipt does not account for. A hit is accounted for only in a place whose
status admits data still there: ``expires`` (with the time it is gone by) or
``operator`` (with the action the time counts from). A hit in a place the
receipt calls ``removed`` or ``not_held``, in a place it does not name, or in a
place it says nothing bounds (``kept``) is a problem.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lambdarec.model_bundle import MODEL_BUNDLES
from tests.support.byte_scan import Hit


def place_of(path: str) -> str | None:
    """The receipt's name for where a file under the platform's root is (None: no place a receipt names)."""
    parts = Path(path).parts
    if parts[0] == "lake" and len(parts) > 1:
        return "models" if parts[1] == MODEL_BUNDLES else f"lake:{parts[1]}"
    if parts[0] == "checkpoints":
        return "speed_state"
    if parts[:2] == ("broker", "data") and len(parts) > 3:  # <log dir>/<topic>-<partition>/<segment>
        return f"kafka:{parts[2].rsplit('-', 1)[0]}"
    if parts[0] == "serving-models":
        return "serving"
    if parts[0] == "postgres":
        return "operational_db"
    return None


def unaccounted(hits: list[Hit], receipt: dict[str, Any]) -> list[str]:
    """The hits the receipt does not account for, each as a sentence."""
    places = {place["place"]: place for place in receipt["places"]}
    problems = []
    for hit in hits:
        name = place_of(hit.path)
        place = places.get(name) if name else None
        found = f"{hit.path} holds {hit.needle!r} ({hit.kind})"
        if place is None:
            problems.append(f"{found}, in {name or 'a place'} the receipt does not name")
        elif place["status"] == "expires" and not place["gone_by"]:
            problems.append(f"{found}: the receipt gives {name} no time")
        elif place["status"] == "operator" and not place["after"]:
            problems.append(f"{found}: the receipt names no action for {name}")
        elif place["status"] not in ("expires", "operator"):
            problems.append(f"{found}, but the receipt says {name} is {place['status']}")
    return problems
