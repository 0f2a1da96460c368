"""Secrets that lambdarec generates or hands to its parts, each in a file that only its owner can read.

A secret never goes on a command line, into a log, a REST answer or a file that others
can read. It lives in ``settings.secrets_root`` (mode 700), one file per secret (mode
600), and whoever needs it reads it from there. A generated secret is made once, by
whichever process needs it first (the server that sets it or a client that presents
it: both get the same one), and kept; a file that arrived with looser modes is made
private when it is read.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

POSTGRES_PASSWORD = "postgres-lambdarec.password"
"""The embedded Postgres's ``lambdarec`` role (the platform's clients: CDC, the demo, tests)."""
POSTGRES_SUPERUSER_PASSWORD = "postgres-superuser.password"  # noqa: S105 - a file name
"""The embedded Postgres's ``postgres`` superuser, which only ``deploy.embedded.postgres`` uses (bootstrap)."""
CDC_CONNECTOR_SECRETS = "cdc-connector.properties"
"""The Debezium connector's database password, read by Kafka Connect's FileConfigProvider."""


def generated(path: Path, nbytes: int = 24) -> str:
    """The secret in ``path``, generated (URL-safe, ``nbytes`` random bytes) if there is none yet."""
    try:
        return read(path)
    except FileNotFoundError:
        write(path, secrets.token_urlsafe(nbytes), replace=False)
        return read(path)


def read(path: Path) -> str:
    """A secret file's content, after making the file private if its mode lets others read it."""
    if path.stat().st_mode & 0o077:
        path.chmod(0o600)
    return path.read_text()


def write(path: Path, text: str, replace: bool = True) -> None:
    """``text`` as the whole of ``path``, mode 600, in one step; with ``replace`` off a file already
    there wins (two processes generating the same secret at once end up with one)."""
    folder = private_folder(path.parent)
    partial = folder / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.partial"
    with os.fdopen(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as handle:
        handle.write(text)
    try:
        if replace:
            os.replace(partial, path)
        else:
            with contextlib.suppress(FileExistsError):  # unlike a rename, a link fails if the name exists
                os.link(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def private_folder(folder: Path) -> Path:
    """``folder``, created if missing, that only its owner can enter."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    if folder.stat().st_mode & 0o077:
        folder.chmod(0o700)
    return folder


def redacted(url: str) -> str:
    """``url`` with its password, if any, shown as ``***``: for logs and what ``up`` prints."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))
