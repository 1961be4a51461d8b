"""The study storage: open any Optuna RDB URL with heartbeats and retries, or fail naming the (masked) URL.

SQLite (the default, ``sqlite:///outputs/qsweep.db`` under the working folder)
is tuned for concurrent local workers; PostgreSQL serves several machines.
The storage is a :class:`~harness.study.rdb.RetryingRDBStorage`: every database
call rides out an outage for up to ``storage.retry_s`` seconds.

The password need not be in ``storage.url`` (where the process list and shell
history show it): :func:`storage_url` adds the one read from
``storage.password_file`` or the environment variable ``storage.password_env``
(default ``QSWEEP_STORAGE_PASSWORD``); PostgreSQL's own ``PGPASSWORD`` and
``~/.pgpass`` work too. Whatever its source, the password is masked everywhere
(:func:`harness.secrets.mask`).

Example:
    >>> import tempfile
    >>> from omegaconf import OmegaConf
    >>> from harness.config import StorageConfig
    >>> storage = open_storage(OmegaConf.structured(StorageConfig(url=f"sqlite:///{tempfile.mkdtemp()}/demo.db")))
    >>> storage.get_heartbeat_interval()
    10
"""
from __future__ import annotations

import logging
import os
import random
import time
from pathlib import Path
from typing import Any

import optuna

from harness.claims import Claims
from harness.errors import ConfigError, StorageError
from harness.secrets import mask, register
from harness.study.db import quiet_optuna
from harness.study.rdb import RetryingRDBStorage
from harness.study.reap import RetryDeadTrial
from harness.study.retry import Retry, reason_of, server_restarting

log = logging.getLogger("qsweep")

#: ``url`` with its password hidden, for messages and files: :func:`harness.secrets.mask` itself.
masked_url = mask


def _password(cfg: Any) -> str | None:
    """The password of ``storage.password_file`` or ``$storage.password_env`` (None if neither is set)."""
    file = cfg.get("password_file")
    if file:
        path = Path(str(file)).expanduser()
        try:
            return path.read_text().rstrip("\r\n")
        except OSError as e:
            raise ConfigError(f"storage.password_file={str(path)!r} cannot be read: {e.strerror}. Give a readable "
                              "file holding the database password (one line).") from None
    env = cfg.get("password_env")
    return os.environ.get(str(env)) or None if env else None


def _url_password(url: str) -> bool:
    """Whether ``url`` itself holds a password."""
    import sqlalchemy

    try:
        return bool(sqlalchemy.engine.make_url(url).password)
    except Exception:  # noqa: BLE001
        return mask(url) != url


def storage_url(cfg: Any) -> str:
    """The URL qsweep connects with: ``storage.url`` (relative SQLite paths made absolute) with the
    password of :func:`_password` added when the URL has none. Every password is registered for masking.

    Raises:
        ConfigError: a password in ``storage.url`` and in ``storage.password_file`` (give it once),
            or an unreadable password file.
    """
    import sqlalchemy

    url = normalize_url(str(cfg.url))
    mask(url)  # registers a password written in the URL
    password = _password(cfg)
    if password is None:
        return url
    register(password)
    try:
        parsed = sqlalchemy.engine.make_url(url)
    except Exception:  # noqa: BLE001 - open_storage reports the malformed URL
        return url
    if parsed.password:
        if cfg.get("password_file"):
            raise ConfigError("storage.url has a password and storage.password_file is set: give the password "
                              "once (preferably in the file, not on the command line).")
        return url
    return parsed.set(password=password).render_as_string(hide_password=False)


def normalize_url(url: str) -> str:
    """Make a relative SQLite path absolute (under the working folder) and create its folder."""
    if url.startswith("sqlite:///"):
        rel = url[len("sqlite:///"):]
        if rel and rel != ":memory:" and not rel.startswith("file:"):
            path = Path(rel).expanduser()
            if not path.is_absolute():
                path = Path.cwd() / path
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise StorageError(f"Cannot create the folder of the study storage {url!r}: {e}. "
                                   "Check storage.url.") from None
            return "sqlite:///" + str(path)
    return url


def _tune_sqlite(engine: Any) -> None:
    """Make SQLite safe and quick for qsweep's concurrent local workers.

    * ``BEGIN IMMEDIATE`` for every transaction (SQLAlchemy's documented pysqlite
      recipe): Python's sqlite3 module otherwise starts a transaction only at the
      first write, so two processes can both read a trial as WAITING and both mark
      it RUNNING — Optuna's ``for_update`` row lock is ignored on SQLite. With
      IMMEDIATE, the read and the write of a transaction hold the write lock.
    * WAL journal with ``synchronous=NORMAL``: a commit does not wait for fsync
      (a trial makes dozens) and readers do not block the writer.
    """
    import sqlalchemy

    def on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # sqlite3 emits no BEGIN of its own
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    def on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    sqlalchemy.event.listen(engine, "connect", on_connect)
    sqlalchemy.event.listen(engine, "begin", on_begin)
    engine.dispose()  # connections opened before the listeners get replaced


def open_storage(cfg: Any) -> optuna.storages.RDBStorage:
    """Open the Optuna RDB storage ``cfg.url`` with heartbeats (``cfg``: StorageConfig).

    Raises:
        StorageError: the URL is malformed, its driver is missing, or the database
            cannot be reached (the message names the masked URL and the reason).
        ConfigError: a non-positive heartbeat setting.
    """
    import sqlalchemy
    from sqlalchemy import exc as sa_exc

    url = storage_url(cfg)
    shown = mask(url)
    if cfg.get("retry_s", 0) < 0:
        raise ConfigError(f"storage.retry_s must be >= 0 seconds, got {cfg.retry_s}.")
    if cfg.heartbeat_interval <= 0:
        raise ConfigError(f"storage.heartbeat_interval must be a positive number of seconds, got {cfg.heartbeat_interval}.")
    if cfg.grace_period <= cfg.heartbeat_interval:
        raise ConfigError(f"storage.grace_period ({cfg.grace_period}) must exceed storage.heartbeat_interval "
                          f"({cfg.heartbeat_interval}) or live trials would be declared dead.")
    try:
        parsed = sqlalchemy.engine.make_url(url)
        backend = parsed.get_backend_name()
    except Exception as e:
        raise StorageError(f"storage.url={shown!r} is not a database URL ({mask(e)}). Use e.g. "
                           "sqlite:///outputs/qsweep.db or postgresql://user@host:5432/dbname.") from None
    if _url_password(str(cfg.url)):
        log.warning("storage.url holds the database password: qsweep masks it in everything it writes, but the "
                    "process list and your shell history show it. Prefer QSWEEP_STORAGE_PASSWORD=... (or "
                    "storage.password_file; PostgreSQL also reads PGPASSWORD and ~/.pgpass).")
    if parsed.drivername == "postgresql":
        # SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3; use psycopg2 when only it is installed.
        import importlib.util

        if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
            url = parsed.set(drivername="postgresql+psycopg2").render_as_string(hide_password=False)
    engine_kwargs: dict[str, Any] = {}
    if backend == "sqlite":
        engine_kwargs["connect_args"] = {"timeout": 60}
    elif backend == "postgresql":
        engine_kwargs["connect_args"] = {"connect_timeout": 10}
        engine_kwargs["pool_pre_ping"] = True
    retry = Retry(float(cfg.get("retry_s", 120.0)), url)
    last: Exception | None = None
    deadline = time.monotonic() + retry.retry_s
    races = 0
    while races < 6:
        try:
            with quiet_optuna():
                storage = RetryingRDBStorage(
                    url, retry=retry, engine_kwargs=engine_kwargs,
                    heartbeat_interval=int(cfg.heartbeat_interval), grace_period=int(cfg.grace_period),
                    heartbeat_stale_trial_callback=RetryDeadTrial(cfg.max_retry))
            if backend == "sqlite":
                _tune_sqlite(storage.engine)
            Claims(storage.engine, retry)  # create qsweep's claims table now: fail here, not mid-sweep
            return storage
        except (sa_exc.IntegrityError, sa_exc.ProgrammingError) as e:
            # Several workers creating the tables of a new database at once: try again.
            last, races = e, races + 1
            time.sleep(0.3 + random.random() * 0.7)
        except (sa_exc.OperationalError, sa_exc.InterfaceError, optuna.exceptions.StorageInternalError) as exc:
            # Optuna wraps a failure of its first session (the version check) in StorageInternalError.
            e = exc.__cause__ if isinstance(exc, optuna.exceptions.StorageInternalError) and exc.__cause__ else exc
            if isinstance(e, (sa_exc.IntegrityError, sa_exc.ProgrammingError)):  # the table-creation race
                last, races = e, races + 1
                time.sleep(0.3 + random.random() * 0.7)
                continue
            if server_restarting(e) and time.monotonic() < deadline:  # starting up / shutting down: wait for it
                if last is None or not server_restarting(last):
                    log.warning("storage: %s is restarting (%s); waiting up to %g s (storage.retry_s)", shown,
                                reason_of(e), retry.retry_s)
                last = e
                time.sleep(1.0 + random.random())
                continue
            raise StorageError(f"Cannot open the study storage {shown}: {reason_of(e)}. Check storage.url and that "
                               "the database server is running and reachable.") from None
        except (ImportError, sa_exc.NoSuchModuleError, sa_exc.ArgumentError) as e:
            raise StorageError(f"Cannot open the study storage {shown}: {mask(e)}. Check storage.url (any Optuna RDB "
                               "URL, e.g. sqlite:///outputs/qsweep.db or postgresql://user@host:5432/dbname; "
                               "PostgreSQL needs psycopg2: pip install 'qsweep[postgres]').") from None
        except RuntimeError as e:  # optuna's schema version check
            raise StorageError(f"Cannot use the study storage {shown}: {mask(e)}") from None
    raise StorageError(f"Cannot initialise the study storage {shown}: {mask(last)}")
