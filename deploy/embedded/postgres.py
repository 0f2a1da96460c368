"""The embedded Postgres: the operational database of the one-machine setup (the shop's items and users).

A Postgres cluster from Debian's package (``postgresql-15``) under
``<root>/postgres/data`` (``embedded_postgres_dir``; see ``cluster_dir`` for a root the
``postgres`` user cannot reach), run as a child process in the foreground, so it never
outlives the process that started it. It is configured for logical decoding
(``wal_level=logical``; Debezium reads it through the built-in ``pgoutput``).
Postgres refuses to run as root, so under root it runs as the ``postgres``
system user the package creates.

On every start it makes sure of the role ``lambdarec`` (LOGIN, REPLICATION), the
database ``operational``, the tables of ``OPERATIONAL_SCHEMA`` (with REPLICA
IDENTITY FULL, so an update carries its old row) and the publication
``lambdarec_cdc`` that CDC reads. With ``operational_db_url`` set there is
nothing to embed: point CDC at that database instead (docs/privacy.md: CDC).

It listens on ``embedded_postgres_host`` (loopback by default), TCP only, and every
connection, replication included, authenticates with a password (SCRAM-SHA-256,
``PG_HBA``). The superuser's and the ``lambdarec`` role's passwords are generated once
into ``secrets_root`` (``lambdarec.secret_files``), set at every start as SCRAM
verifiers computed here, so the server never sees them in clear; the platform's clients
read the role's through ``settings.operational_db``. A cluster initialised before
passwords (``--auth=trust``) gets them on its first start, then its trust lines go.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import pwd
import shutil
import signal
import subprocess
from pathlib import Path
from urllib.parse import quote

from lambdarec import secret_files
from deploy.embedded.process import EmbeddedProcess
from lambdarec.processes import StageError, run_until_signalled
from lambdarec.settings import Settings, dial
from schemas.cdc import TABLES as CDC_TABLES

log = logging.getLogger(__name__)

SYSTEM_USER = SUPERUSER = "postgres"  # who runs the server when we are root, and the cluster's superuser
ROLE = DATABASE_OWNER = "lambdarec"
DATABASE = "operational"
PUBLICATION = "lambdarec_cdc"
OPERATIONAL_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    item_id     text PRIMARY KEY,
    title       text NOT NULL,
    category    text,
    price       numeric(12, 2),
    available   boolean NOT NULL DEFAULT true,
    attributes  jsonb NOT NULL DEFAULT '{}'::jsonb,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS users (
    user_id     text PRIMARY KEY,
    country     char(2),
    age_band    text,
    signup_date date,
    membership  text,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE items REPLICA IDENTITY FULL;
ALTER TABLE users REPLICA IDENTITY FULL;
"""
"""The operational tables of the one-machine setup (and of the demo): what CDC brings into the lake."""
SERVER_OPTIONS = {
    "unix_socket_directories": "",  # TCP only: no socket path to own or to outgrow
    "password_encryption": "scram-sha-256",
    "wal_level": "logical",
    "max_wal_senders": "4",
    "max_replication_slots": "4",
    "shared_buffers": "32MB",
    "max_connections": "40",
}
PG_HBA = """# Written by lambdarec on every start of the embedded Postgres (deploy/embedded/postgres.py): edits are lost.
# Every connection, from any address listen_addresses lets in, needs its role's password (SCRAM).
# TYPE  DATABASE     USER  ADDRESS  METHOD
local   all          all            scram-sha-256
host    all          all   all      scram-sha-256
local   replication  all            scram-sha-256
host    replication  all   all      scram-sha-256
"""


class PostgresError(StageError):
    """The embedded Postgres cannot be started here, or it died."""


class EmbeddedPostgres(EmbeddedProcess):
    """Run Postgres on loopback for the life of a ``with`` block, the operational schema in place.
    Its stop is a fast shutdown (SIGINT: clients disconnected, a clean checkpoint)."""

    name, event, error, stop_signal = "postgres server", "postgres", PostgresError, signal.SIGINT

    def __init__(self, settings: Settings, startup_timeout_s: float = 60.0, stop_timeout_s: float = 30.0):
        if settings.operational_db_url:
            raise PostgresError(
                "operational_db_url is set: the platform uses that database and there is no Postgres to embed. "
                "Unset LAMBDAREC_OPERATIONAL_DB_URL to run the embedded one."
            )
        self.home = cluster_dir(settings)
        super().__init__(self.home / "postgres.log", startup_timeout_s, stop_timeout_s)
        self.settings = settings
        self.port = settings.embedded_postgres_port
        self.data_dir = self.home / "data"

    @property
    def url(self) -> str:
        return self.settings.operational_db

    def start(self) -> "EmbeddedPostgres":
        """initdb on first use, start the server, wait for it, and create the role, database, schema and publication."""
        if self._process is not None:
            raise PostgresError("this embedded Postgres has already been started")
        binaries = _binaries()
        self.home.mkdir(parents=True, exist_ok=True)
        user = _run_as()
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb(binaries, user)
        listen = {"listen_addresses": self.settings.embedded_postgres_host, "port": str(self.port)}
        options = [arg for key, value in {**SERVER_OPTIONS, **listen}.items() for arg in ("-c", f"{key}={value}")]
        self._launch([str(binaries / "postgres"), "-D", str(self.data_dir), *options], cwd=self.home, **_as_user(user))
        return self._get_ready(self._set_up, f"port={self.port}")

    def _set_up(self) -> None:
        self._wait_ready()
        bootstrap(self.settings, self._superuser_url(), self._superuser_password())
        self._require_passwords()

    def _initdb(self, binaries: Path, user: pwd.struct_passwd | None) -> None:
        partial = self.home / "data.partial"
        shutil.rmtree(partial, ignore_errors=True)  # a half-done initdb of an earlier, killed start
        partial.mkdir(mode=0o700)
        if user is not None:
            os.chown(partial, user.pw_uid, user.pw_gid)
            _require_reachable(self.home, user)
        # initdb reads the superuser's password from a file: a copy, mode 600, owned by whoever runs initdb
        # (the postgres user cannot read our secrets folder, nor a pipe of ours), gone once it is done.
        pwfile = self.home / ".initdb-password.partial"
        pwfile.unlink(missing_ok=True)
        with os.fdopen(os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as handle:
            handle.write(self._superuser_password() + "\n")
        if user is not None:
            os.chown(pwfile, user.pw_uid, user.pw_gid)
        try:
            result = subprocess.run(
                [str(binaries / "initdb"), "-D", str(partial), "-U", SUPERUSER, "--auth=scram-sha-256",
                 f"--pwfile={pwfile}", "--encoding=UTF8", "--locale=C.UTF-8", "--no-instructions"],
                capture_output=True, text=True, stdin=subprocess.DEVNULL, cwd=self.home, **_as_user(user),
            )
        finally:
            pwfile.unlink(missing_ok=True)
        with self.log_path.open("a") as log_file:
            log_file.write(result.stdout + result.stderr)
        if result.returncode != 0:
            raise PostgresError(f"initdb in {partial} failed (exit {result.returncode}):\n"
                                f"{(result.stdout + result.stderr)[-3000:]}")
        partial.rename(self.data_dir)

    def _superuser_password(self) -> str:
        return secret_files.generated(self.settings.secrets_root / secret_files.POSTGRES_SUPERUSER_PASSWORD)

    def _superuser_url(self) -> str:
        password = quote(self._superuser_password(), safe="")
        return f"postgresql://{SUPERUSER}:{password}@{dial(self.settings.embedded_postgres_host, self.port)}/postgres"

    def _require_passwords(self) -> None:
        """Write ``PG_HBA`` and have the server reload it: from here every connection needs a password."""
        import psycopg

        (self.data_dir / "pg_hba.conf").write_text(PG_HBA)  # keeps the file's owner (postgres) and mode
        with psycopg.connect(self._superuser_url(), autocommit=True) as admin:
            admin.execute("SELECT pg_reload_conf()")
            # The reload is asynchronous, but pg_hba_file_rules reads the file afresh: a rule it cannot parse shows.
            errors = admin.execute("SELECT line_number, error FROM pg_hba_file_rules WHERE error IS NOT NULL").fetchall()
        if errors:
            raise PostgresError(f"the embedded Postgres refused lambdarec's pg_hba.conf: {errors}")

    def _wait_ready(self) -> None:
        import psycopg

        def accepting() -> bool:
            self._check_alive()
            try:
                psycopg.connect(self._superuser_url(), connect_timeout=2).close()
            except psycopg.OperationalError as exc:
                if "password authentication failed" in str(exc):
                    raise PostgresError(
                        f"the cluster in {self.data_dir} does not take the superuser password in "
                        f"{self.settings.secrets_root / secret_files.POSTGRES_SUPERUSER_PASSWORD}: it was initialised "
                        "with another one. Restore that file, or remove the cluster folder to start afresh") from exc
                raise
            return True

        self._wait_until(accepting, f"postgres to accept connections on port {self.port}", 0.1)


def bootstrap(settings: Settings, superuser_url: str, superuser_password: str) -> None:
    """Create what the platform needs in a fresh cluster, idempotently: role, database, tables, publication;
    and set both roles' passwords from their secret files."""
    import psycopg
    from psycopg import sql

    role_password = secret_files.generated(settings.secrets_root / secret_files.POSTGRES_PASSWORD)
    with psycopg.connect(superuser_url, autocommit=True) as admin:
        if admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [ROLE]).fetchone() is None:
            admin.execute(sql.SQL("CREATE ROLE {} LOGIN REPLICATION").format(sql.Identifier(ROLE)))
        for role, password in ((SUPERUSER, superuser_password), (ROLE, role_password)):
            # A SCRAM verifier computed by libpq here: the clear password never reaches the server or its logs.
            verifier = admin.pgconn.encrypt_password(password.encode(), role.encode(), b"scram-sha-256").decode()
            admin.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(role), sql.Literal(verifier)))
        if admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE]).fetchone() is None:
            admin.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(DATABASE), sql.Identifier(DATABASE_OWNER)))
    with psycopg.connect(settings.operational_db, autocommit=True) as owner:
        owner.execute(OPERATIONAL_SCHEMA)
        if owner.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", [PUBLICATION]).fetchone() is None:
            tables = sql.SQL(", ").join(sql.Identifier(*name.split(".")) for name in CDC_TABLES)
            owner.execute(sql.SQL("CREATE PUBLICATION {} FOR TABLE {}").format(sql.Identifier(PUBLICATION), tables))


def cluster_dir(settings: Settings) -> Path:
    """The cluster's folder: ``embedded_postgres_dir``, else ``<root>/postgres``; but as root, when the
    postgres user cannot reach that (a root under a private home), a folder of this root's own in
    ``/var/tmp/lambdarec-postgres``."""
    if settings.embedded_postgres_dir:
        return Path(settings.embedded_postgres_dir).resolve()
    home = (Path(settings.root) / "postgres").resolve()
    user = _run_as()
    if user is None or _unreachable(home.parent, user) is None:
        return home
    shared = Path("/var/tmp/lambdarec-postgres")
    shared.mkdir(mode=0o711, exist_ok=True)
    return shared / hashlib.sha256(str(home).encode()).hexdigest()[:16]


def _binaries() -> Path:
    """The newest installed Postgres's bin folder (Debian: /usr/lib/postgresql/<major>/bin)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parent.parent.name)
                   if p.parent.parent.name.isdigit() else 0)
    if not found:
        raise PostgresError("no Postgres server is installed: run `make postgres` (Debian: apt-get install "
                            "postgresql-15), or set LAMBDAREC_OPERATIONAL_DB_URL to an existing database")
    return found[-1].parent


def _run_as() -> pwd.struct_passwd | None:
    """The system user to run Postgres as: ``postgres`` when we are root (it refuses root), else ourselves."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SYSTEM_USER)
    except KeyError as exc:
        raise PostgresError(f"running as root needs the {SYSTEM_USER!r} system user, which Debian's postgresql "
                            "package creates; install it, or run as an ordinary user") from exc


def _as_user(user: pwd.struct_passwd | None) -> dict:
    """Popen arguments that drop to ``user`` (before ``preexec_fn``, so the death signal survives)."""
    return {} if user is None else {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


def _unreachable(folder: Path, user: pwd.struct_passwd) -> Path | None:
    """The first of ``folder`` and its parents that ``user`` cannot pass through (None: all can be)."""
    for parent in [folder, *folder.parents]:
        if not parent.exists():
            continue
        stat = parent.stat()
        if not (stat.st_mode & 0o001 or (stat.st_gid == user.pw_gid and stat.st_mode & 0o010)
                or stat.st_uid == user.pw_uid):
            return parent
    return None


def _require_reachable(folder: Path, user: pwd.struct_passwd) -> None:
    """Every parent of ``folder`` must let ``user`` through, or Postgres cannot reach its data."""
    blocked = _unreachable(folder, user)
    if blocked is not None:
        raise PostgresError(f"{blocked} is not traversable by the {user.pw_name!r} user that runs Postgres "
                            f"(mode {oct(blocked.stat().st_mode & 0o777)}); `chmod o+x {blocked}`, or set "
                            "LAMBDAREC_EMBEDDED_POSTGRES_DIR elsewhere")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=None,
                        help="Loopback port (default: settings.embedded_postgres_port).")


def command(args: argparse.Namespace, settings: Settings) -> int:
    """``lambdarec postgres``: run the embedded Postgres until SIGINT or SIGTERM; non-zero if it dies."""
    if args.port is not None:
        settings = settings.model_copy(update={"embedded_postgres_port": args.port})
    return run_until_signalled("postgres", EmbeddedPostgres(settings).start, lambda server: {
        "url": secret_files.redacted(server.url), "publication": PUBLICATION, "tables": list(CDC_TABLES),
        "pid": server.pid, "data": str(server.data_dir), "log": str(server.log_path),
    }, (PostgresError,))
