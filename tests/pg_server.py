"""A real PostgreSQL for tests, found or started by the test setup itself.

The server on 127.0.0.1:5432 is used when it answers (our machines and CI run one, trust auth);
otherwise a private throwaway cluster is started with ``initdb``/``pg_ctl`` from the installed
PostgreSQL binaries, as on a user's machine where none runs. Each test session works in a
database of its own, created here and dropped afterwards. Only the PostgreSQL command-line tools
are used, so the test setup does not depend on the driver the store picks.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

SHARED_HOST = "127.0.0.1"
SHARED_PORT = 5432


class PostgresUnavailable(RuntimeError):
    """No server answers and none can be started here (no binaries, no usable user)."""


@dataclass
class PgServer:
    host: str
    port: int
    user: str
    private: bool = False
    _stop: Callable[[], None] | None = field(default=None, repr=False)
    _restart: Callable[[], None] | None = field(default=None, repr=False)

    def url(self, database: str) -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{database}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run ``sql`` with psql; the output rows, unaligned. Raises on any SQL error."""
        where = ["-h", self.host, "-p", str(self.port), "-U", self.user, "-d", database]
        out = subprocess.run(
            [_tool("psql"), "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql, *where],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if out.returncode != 0:
            raise RuntimeError(f"psql failed ({out.returncode}): {out.stderr.strip()}")
        return out.stdout.strip()

    def create_database(self) -> str:
        name = f"duro_test_{uuid.uuid4().hex[:12]}"
        self.psql(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def restart(self) -> None:
        """Restart a private server (``pg_ctl restart -m fast``: every connection is cut)."""
        if self._restart is None:
            raise RuntimeError("only a private server can be restarted by the tests")
        self._restart()

    def stop(self) -> None:
        if self._stop is not None:
            self._stop()
            self._stop = None


def _tool(name: str) -> str:
    """A PostgreSQL program: on PATH, or in the usual Debian/Ubuntu and Homebrew places."""
    found = shutil.which(name)
    if found:
        return found
    for pattern in (
        f"/usr/lib/postgresql/*/bin/{name}",
        f"/usr/local/opt/postgresql*/bin/{name}",
        f"/opt/homebrew/opt/postgresql*/bin/{name}",
    ):
        matches = sorted(glob.glob(pattern))
        if matches:
            return matches[-1]  # the newest version
    raise PostgresUnavailable(f"the PostgreSQL program {name!r} is not installed")


def _answers(host: str, port: int) -> bool:
    try:
        ready = subprocess.run(
            [_tool("pg_isready"), "-q", "-h", host, "-p", str(port), "-t", "2"], timeout=10
        )
    except (PostgresUnavailable, subprocess.TimeoutExpired):
        return False
    return ready.returncode == 0


def shared_server(host: str = SHARED_HOST, port: int = SHARED_PORT) -> PgServer | None:
    """The running server, with the first role that may create databases; None if none."""
    if not _answers(host, port):
        return None
    candidates = [os.environ.get("PGUSER"), "postgres", pwd.getpwuid(os.getuid()).pw_name]
    for user in dict.fromkeys(u for u in candidates if u):
        server = PgServer(host, port, user)
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            may_create = "SELECT rolcreatedb OR rolsuper FROM pg_roles WHERE rolname = current_user"
            if server.psql(may_create) == "t":
                return server
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((SHARED_HOST, 0))
        return int(s.getsockname()[1])


def private_server() -> PgServer:
    """Start a throwaway cluster (trust auth, no fsync) on a free port; ``stop()`` removes it.

    PostgreSQL refuses to run as root, so under root the cluster runs as the ``postgres``
    system user (or ``nobody``), through ``runuser``.
    """
    initdb, pg_ctl = _tool("initdb"), _tool("pg_ctl")
    base = Path(tempfile.mkdtemp(prefix="duro-pg-"))
    run_as: list[str] = []
    if os.geteuid() == 0:
        account = next((a for a in ("postgres", "nobody") if _has_user(a)), None)
        if account is None or shutil.which("runuser") is None:
            raise PostgresUnavailable("running as root without a postgres user to run as")
        entry = pwd.getpwnam(account)
        os.chown(base, entry.pw_uid, entry.pw_gid)
        run_as = ["runuser", "-u", account, "--"]
    data, port = base / "data", _free_port()

    def run(*args: str) -> None:
        out = subprocess.run([*run_as, *args], capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            raise PostgresUnavailable(f"{Path(args[0]).name} failed: {out.stderr.strip()[-2000:]}")

    run(initdb, "-D", str(data), "-U", "duro", "--auth=trust", "-E", "UTF8", "--no-sync")
    options = f"-p {port} -k {base} -c listen_addresses={SHARED_HOST} -c fsync=off"
    run(pg_ctl, "-D", str(data), "-o", options, "-l", str(base / "log"), "-w", "-t", "60", "start")

    def stop() -> None:
        with contextlib.suppress(PostgresUnavailable, subprocess.TimeoutExpired):
            run(pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(base, ignore_errors=True)

    def restart() -> None:
        log = str(base / "log")
        run(pg_ctl, "-D", str(data), "-o", options, "-l", log, "-m", "fast", "-w", "restart")

    return PgServer(SHARED_HOST, port, "duro", private=True, _stop=stop, _restart=restart)


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def find_or_start() -> PgServer:
    """The shared server when it answers, else a private one. ``DURO_TEST_PG=private`` forces
    the private cluster (to test that path on a machine that has a server)."""
    if os.environ.get("DURO_TEST_PG") != "private":
        server = shared_server()
        if server is not None:
            return server
    return private_server()
