"""The study storage: open any Optuna RDB URL with heartbeats, or fail naming the (masked) URL.

SQLite (the default, ``sqlite:///outputs/qsweep.db`` under the working folder)
is tuned for concurrent local workers; PostgreSQL serves several machines.

Example:
    >>> import tempfile
    >>> from omegaconf import OmegaConf
    >>> from harness.config import StorageConfig
    >>> storage = open_storage(OmegaConf.structured(StorageConfig(url=f"sqlite:///{tempfile.mkdtemp()}/demo.db")))
    >>> storage.get_heartbeat_interval()
    10
"""
from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import optuna

from harness.claims import Claims
from harness.errors import ConfigError, StorageError
from harness.study.db import quiet_optuna
from harness.study.reap import RetryDeadTrial


def masked_url(url: str) -> str:
    """``url`` with its password hidden (for messages and files)."""
    try:
        import sqlalchemy

        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


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

    url = normalize_url(str(cfg.url))
    shown = masked_url(url)
    if cfg.heartbeat_interval <= 0:
        raise ConfigError(f"storage.heartbeat_interval must be a positive number of seconds, got {cfg.heartbeat_interval}.")
    if cfg.grace_period <= cfg.heartbeat_interval:
        raise ConfigError(f"storage.grace_period ({cfg.grace_period}) must exceed storage.heartbeat_interval "
                          f"({cfg.heartbeat_interval}) or live trials would be declared dead.")
    try:
        parsed = sqlalchemy.engine.make_url(url)
        backend = parsed.get_backend_name()
    except Exception as e:
        raise StorageError(f"storage.url={shown!r} is not a database URL ({e}). Use e.g. "
                           "sqlite:///outputs/qsweep.db or postgresql://user@host:5432/dbname.") from None
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
    last: Exception | None = None
    for attempt in range(6):
        try:
            with quiet_optuna():
                storage = optuna.storages.RDBStorage(
                    url, engine_kwargs=engine_kwargs,
                    heartbeat_interval=int(cfg.heartbeat_interval), grace_period=int(cfg.grace_period),
                    heartbeat_stale_trial_callback=RetryDeadTrial(cfg.max_retry))
            if backend == "sqlite":
                _tune_sqlite(storage.engine)
            Claims(storage.engine)  # create qsweep's claims table now: fail here, not mid-sweep
            return storage
        except (sa_exc.IntegrityError, sa_exc.ProgrammingError) as e:
            # Several workers creating the tables of a new database at once: try again.
            last = e
            time.sleep(0.3 + random.random() * 0.7)
        except (sa_exc.OperationalError, sa_exc.InterfaceError) as e:
            reason = str(getattr(e, "orig", e) or e).strip().splitlines()[0] if str(getattr(e, "orig", e)).strip() else type(e).__name__
            raise StorageError(f"Cannot open the study storage {shown}: {reason}. Check storage.url and that the "
                               "database server is running and reachable.") from None
        except (ImportError, sa_exc.NoSuchModuleError, sa_exc.ArgumentError) as e:
            raise StorageError(f"Cannot open the study storage {shown}: {e}. Check storage.url (any Optuna RDB URL, "
                               "e.g. sqlite:///outputs/qsweep.db or postgresql://user@host:5432/dbname; "
                               "PostgreSQL needs psycopg2: pip install 'qsweep[postgres]').") from None
        except RuntimeError as e:  # optuna's schema version check
            raise StorageError(f"Cannot use the study storage {shown}: {e}") from None
    raise StorageError(f"Cannot initialise the study storage {shown}: {last}")
