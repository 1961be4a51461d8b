"""A throwaway PostgreSQL 15 server for the fault tests: start, stop, restart (``pg_ctl``), on loopback.

As in ``tests/sweep/test_workers.py``: ``initdb``/``pg_ctl`` in a temp dir, run
as the ``postgres`` system user when the tests run as root (the server refuses
root). :func:`server_or_skip` skips, with the reason, only when the binaries
(or, as root, the ``postgres`` user) are absent.
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.sweep.support import free_port


def pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    cands = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return cands[-1] if cands else None


class PgServer:
    """One PostgreSQL cluster in a temp dir with a database ``qsweep``; :attr:`url` connects to it."""

    def __init__(self) -> None:
        self.initdb, self.pg_ctl = pg_bin("initdb"), pg_bin("pg_ctl")
        self.as_root = os.geteuid() == 0
        self.base = Path(tempfile.mkdtemp(prefix="qsweep-pg-"))
        self.data, self.port = self.base / "data", free_port()
        self.prefix: list[str] = []
        if self.as_root:
            user = pwd.getpwnam("postgres")
            os.chown(self.base, user.pw_uid, user.pw_gid)
            self.prefix = ["runuser", "-u", "postgres", "--"]
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/qsweep"

    def _ctl(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
        return subprocess.run(self.prefix + [self.pg_ctl, "-D", str(self.data), *args], capture_output=True,
                              text=True, timeout=timeout)

    def start(self) -> "PgServer":
        if not self.data.exists():
            subprocess.run(self.prefix + [self.initdb, "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E",
                                          "UTF8", "--no-sync"], check=True, capture_output=True, timeout=180)
            first = True
        else:
            first = False
        opts = (f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c max_connections=60")
        proc = self._ctl("-o", opts, "-l", str(self.base / "log"), "-w", "-t", "120", "start")
        assert proc.returncode == 0, proc.stdout + proc.stderr
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
        assert proc.returncode == 0, proc.stdout + proc.stderr
        time.sleep(0.5)
        return f"postgresql://{user}@127.0.0.1:{self.port}/qsweep"

    def restart(self) -> float:
        """``pg_ctl restart -m fast`` (what a failover or maintenance window does); return its seconds."""
        t0 = time.monotonic()
        proc = self._ctl("restart", "-m", "fast", "-w", "-t", "120", "-l", str(self.base / "log"))
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return time.monotonic() - t0

    def stop(self, mode: str = "fast") -> None:
        self._ctl("-m", mode, "-w", "stop", timeout=120)

    def remove(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)


def server_or_skip() -> PgServer:
    if not pg_bin("initdb") or not pg_bin("pg_ctl"):
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' system user to start the server as")
    return PgServer()
