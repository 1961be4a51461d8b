"""A throwaway PostgreSQL server on loopback for the soak benchmark and the tests: start, stop, restart.

``initdb``/``pg_ctl`` in a temp folder (as the ``postgres`` system user when
run as root: the server refuses root), trust authentication on 127.0.0.1, one
database ``qsweep``. :func:`missing` says why a server cannot be started here.

Example:
    >>> server = PgServer().start()          # doctest: +SKIP
    >>> server.restart(); server.remove()    # doctest: +SKIP
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def pg_bin(name: str) -> str | None:
    """A PostgreSQL server binary on PATH or under /usr/lib/postgresql/*/bin (the newest)."""
    found = shutil.which(name)
    if found:
        return found
    cands = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return cands[-1] if cands else None


def _runuser() -> str | None:
    """``runuser`` (util-linux) on PATH or in the sbin folders a minimal PATH may leave out."""
    return shutil.which("runuser", path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))


def as_postgres() -> list[str]:
    """The command prefix that runs a server binary as the ``postgres`` system user when we are root
    (the server refuses to run as root), else nothing."""
    return [_runuser() or "runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def missing() -> str | None:
    """Why no server can be started here (None: it can)."""
    if not pg_bin("initdb") or not pg_bin("pg_ctl"):
        return "PostgreSQL server binaries (initdb, pg_ctl) are not installed"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no 'postgres' system user to start the server as"
        if _runuser() is None:
            return "running as root and util-linux's runuser (to start the server as 'postgres') is not installed"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgServer:
    """One PostgreSQL cluster in a temp folder with a database ``qsweep``; :attr:`url` connects to it."""

    def __init__(self) -> None:
        why = missing()
        if why:
            raise RuntimeError(why)
        self.initdb, self.pg_ctl = pg_bin("initdb"), pg_bin("pg_ctl")
        self.base = Path(tempfile.mkdtemp(prefix="qsweep-pg-"))
        self.data, self.port = self.base / "data", _free_port()
        self.prefix: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.base, user.pw_uid, user.pw_gid)
            self.prefix = as_postgres()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/qsweep"

    def _ctl(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
        return subprocess.run(self.prefix + [str(self.pg_ctl), "-D", str(self.data), *args], capture_output=True,
                              text=True, timeout=timeout)

    def start(self) -> "PgServer":
        """Start the server (creating the cluster and the database the first time)."""
        first = not self.data.exists()
        if first:
            subprocess.run(self.prefix + [str(self.initdb), "-D", str(self.data), "-A", "trust", "-U", "postgres",
                                          "-E", "UTF8", "--no-sync"], check=True, capture_output=True, timeout=180)
        opts = f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=60"
        proc = self._ctl("-o", opts, "-l", str(self.base / "log"), "-w", "-t", "120", "start")
        if proc.returncode != 0:
            raise RuntimeError(f"pg_ctl start failed: {proc.stdout}{proc.stderr}")
        if first:
            import psycopg2

            conn = psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres")
            conn.autocommit = True
            conn.cursor().execute("CREATE DATABASE qsweep")
            conn.close()
        return self

    def add_password_user(self, user: str, password: str) -> str:
        """A role that must log in over TCP with ``password`` (scram), owning the database; return its URL
        without the password."""
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres")
        conn.autocommit = True
        cur = conn.cursor()
        cur.execute(f"CREATE ROLE {user} LOGIN PASSWORD %s", (password,))
        cur.execute(f"ALTER DATABASE qsweep OWNER TO {user}")
        conn.close()
        hba = self.data / "pg_hba.conf"
        hba.write_text(f"host all {user} 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
        proc = self._ctl("reload")
        if proc.returncode != 0:
            raise RuntimeError(f"pg_ctl reload failed: {proc.stdout}{proc.stderr}")
        time.sleep(0.5)
        return f"postgresql://{user}@127.0.0.1:{self.port}/qsweep"

    def restart(self) -> float:
        """``pg_ctl restart -m fast`` (what a failover or a maintenance window does); return its seconds."""
        t0 = time.monotonic()
        proc = self._ctl("restart", "-m", "fast", "-w", "-t", "120", "-l", str(self.base / "log"))
        if proc.returncode != 0:
            raise RuntimeError(f"pg_ctl restart failed: {proc.stdout}{proc.stderr}")
        return time.monotonic() - t0

    def stop(self, mode: str = "fast") -> None:
        self._ctl("-m", mode, "-w", "stop", timeout=120)

    def remove(self) -> None:
        """Stop the server and delete its folder."""
        self.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)
