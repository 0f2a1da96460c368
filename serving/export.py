"""Right of access: everything the lake holds on one user, as one JSON-ready document.

Serving's ``GET /v1/admin/users/{user_id}/export`` adds what only serving knows
(the user's current recommendations); ``lambdarec export`` asks the running
serving API for those, presenting ``api_key`` (scope read). Both append a row to
the audit log.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from datetime import date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pyarrow.compute as pc

from lambdarec import api_keys, audit, consent, privacy
from lambdarec.lake import Lake
from lambdarec.settings import Settings
from schemas.tables import (
    DEAD_LETTER,
    EVENTS,
    MODEL_INTERACTIONS,
    PRIVACY_REQUESTS,
    SPEED_USER_FEATURES,
    SPEED_USER_INTERACTIONS,
    USER_FACTORS,
    USER_IDS,
    USER_PROFILES,
)


def user_data(lake: Lake, pseudonym: str) -> dict[str, Any] | None:
    """The user's rows in every table, their consent history, the models trained on their data and
    their privacy requests; None when the lake holds nothing of them."""
    by_user = pc.field("user_id") == pseudonym
    events = _rows(lake, EVENTS, by_user, "occurred_at")
    interactions = _rows(lake, SPEED_USER_INTERACTIONS, by_user, "occurred_at")
    features = _rows(lake, SPEED_USER_FEATURES, by_user, "batch_id")
    profile = lake.read_arrow(USER_PROFILES, filter=by_user).to_pylist()
    history = consent.history(lake, pseudonym)
    dead = [row for row in lake.read_arrow(DEAD_LETTER).to_pylist() if pseudonym.encode() in (row["raw"] or b"")]
    subject = privacy.subject_hash(pseudonym)
    requests = [{"request_id": r["request_id"], "kind": r["kind"], "requested_at": r["requested_at"],
                 "source": r["source"], "completed": privacy.receipt(lake, r["request_id"]) is not None}
                for r in lake.read_arrow(PRIVACY_REQUESTS, filter=pc.field("subject_hash") == subject).to_pylist()
                if r["kind"] == privacy.ERASURE]
    models = models_trained_on(lake, pseudonym)
    if not any((events, interactions, features, profile, history, dead, requests, models)):
        return None
    return jsonable({
        "pseudonym": pseudonym,
        "events": events,
        "speed_interactions": interactions,
        "features": features,
        "profile": profile[0] if profile else None,
        "speed_profile": features[-1] if features else None,
        "consent_history": history,
        "consent": {"personalisation": pseudonym not in consent.withdrawn(history)},
        "dead_letters": dead,
        "models_trained_on_their_data": models,
        "privacy_requests": requests,
    })


def models_trained_on(lake: Lake, pseudonym: str) -> list[int]:
    """Model versions whose training data held the user (their factor row, or their interactions)."""
    only = pc.field("user_id") == pseudonym
    versions = set(lake.read_arrow(USER_FACTORS, filter=only).column("model_version").to_pylist())
    indexes = lake.read_arrow(USER_IDS, filter=only).column("user_index").to_pylist()
    if indexes:
        used = lake.read_arrow(MODEL_INTERACTIONS, filter=pc.field("user_index").isin(indexes))
        versions |= set(used.column("model_version").to_pylist())
    return sorted(versions)


def _rows(lake: Lake, spec, only, order: str) -> list[dict[str, Any]]:
    return sorted(lake.read_arrow(spec, filter=only).to_pylist(), key=lambda row: (row[order] is None, row[order]))


def jsonable(value: Any) -> Any:
    """``value`` with datetimes as ISO text, bytes as text (base64 when not UTF-8) and maps as objects."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        if value and all(isinstance(v, tuple) and len(v) == 2 for v in value):  # an Arrow map's entries
            return {str(k): jsonable(v) for k, v in value}
        return [jsonable(v) for v in value]
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            return {"base64": base64.b64encode(value).decode()}
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("user_id", help="The raw user id (pseudonymised here, never stored).")
    parser.add_argument("--output", type=Path, help="Write the document here instead of printing it.")


def command(args: argparse.Namespace, settings: Settings) -> int:
    """``lambdarec export USER_ID``: the lake's document, with the user's recommendations from the
    running serving API (``serving_url``, else ``serve_host``:``serve_port``); exit code 1 when nothing
    is held on them."""
    from lambdarec.key_fingerprint import verify_pseudonym_key
    from lambdarec.pseudonym import pseudonymise

    verify_pseudonym_key(settings, "export")  # under another key the user would look unknown
    lake, pseudonym = Lake(settings), pseudonymise(args.user_id, settings.pseudonym_key)
    held = user_data(lake, pseudonym)
    key_id = api_keys.key_id_of(settings.api_key.get_secret_value())
    audit.append(lake, [audit.Entry(action="user.export", outcome="not_found" if held is None else "ok", key_id=key_id,
                                    subject=audit.subject_of(pseudonym), source="cli",
                                    detail=f"by {audit.operator()}")])
    if held is None:
        print(json.dumps({"error": f"nothing is held on user_id {args.user_id!r}"}), file=sys.stderr)
        return 1
    document = {"user_id": args.user_id, **held, "serving": _serving_part(settings, args.user_id)}
    text = json.dumps(document, indent=2)
    if args.output:
        args.output.write_text(text + "\n")
    else:
        print(text)
    return 0


def _serving_part(settings: Settings, user_id: str) -> dict[str, Any]:
    """The user's recommendations now, from serving; the reason instead when serving does not answer."""
    import httpx

    base = settings.serving_url.rstrip("/") or f"http://{settings.serve_host}:{settings.serve_port}"
    url = f"{base}/v1/users/{quote(user_id, safe='')}/recommendations"
    try:
        response = httpx.get(url, headers=api_keys.bearer(settings), timeout=10)
        response.raise_for_status()
    except httpx.HTTPError as exc:
        return {"recommendations": None, "unavailable": f"serving at {url} did not answer: {exc}"}
    body = response.json()
    return {"recommendations": {name: body[name] for name in ("strategy", "model_version", "items")}}
