"""Transient database errors, and riding out a database outage: one retry policy for every storage call.

:func:`is_transient` says which errors mean "the database is away for a moment"
(the connection was lost, the server is restarting or refusing connections, a
serialization failure or deadlock, SQLite busy); :class:`Retry` runs one
storage operation through such an outage with backoff, for up to
``storage.retry_s`` seconds counted from the first failure of the outage. The
state is shared by every thread of the process (the main loop and the heartbeat
thread), so an outage logs one warning when it starts and one line when the
database is back, and when it lasts too long every caller gets the same
:class:`~harness.errors.StorageUnavailableError`.

An operation whose commit may have happened although the call failed (the
server committed, the answer was lost) gets a ``check``: after a failure it runs
first and says whether the work is already done (see
:class:`harness.study.rdb.RetryingRDBStorage`).

Example:
    >>> r = Retry(retry_s=5, url="sqlite:///demo.db")
    >>> r.call(lambda x: x + 1, 41)
    42
"""
from __future__ import annotations

import contextlib
import logging
import math
import random
import threading
import time
from typing import Any, Callable, Iterator, TypeVar

from harness.errors import StorageError, StorageUnavailableError
from harness.secrets import mask
from harness.shutdown import held

log = logging.getLogger("qsweep")

T = TypeVar("T")

#: SQLSTATE classes and codes of errors that go away by themselves: connection exceptions (08...),
#: the server shutting down or starting (57P01-57P03), serialization failures and deadlocks
#: (40001, 40P01), too many connections (53300).
TRANSIENT_SQLSTATES = ("08", "57P01", "57P02", "57P03", "40001", "40P01", "53300")
#: Messages of a server that is starting or stopping (when libpq reports no SQLSTATE).
_SERVER_RESTARTING = ("the database system is starting up", "the database system is shutting down",
                      "the database system is in recovery mode", "terminating connection due to administrator")
#: Backoff between attempts: base * 2**attempt seconds, at most this many, with jitter.
BACKOFF_BASE, BACKOFF_MAX = 0.25, 5.0


def _dbapi_transient(orig: BaseException | None) -> bool:
    code = getattr(orig, "pgcode", None) or getattr(orig, "sqlstate", None)
    if code:
        return str(code).startswith(TRANSIENT_SQLSTATES)
    message = str(orig).lower()
    if "sqlite" in type(orig).__module__:
        return "locked" in message or "busy" in message
    return True  # a connection-level failure without SQLSTATE: server gone, refused, timed out


def is_transient(exc: BaseException) -> bool:
    """True for an error that means "the database is away for a moment" (retry it).

    SQLAlchemy's ``OperationalError`` (except SQL states that are real errors, and
    SQLite errors other than busy/locked), ``InterfaceError``, any ``DBAPIError``
    that invalidated its connection, a connection-pool timeout, a statement sent
    on a transaction whose connection was lost (``PendingRollbackError``), and
    Optuna's ``StorageInternalError`` wrapping one of these.
    """
    import optuna
    from sqlalchemy import exc as sa_exc

    e: BaseException | None = exc
    for _ in range(8):
        if e is None:
            return False
        if isinstance(e, sa_exc.DBAPIError):
            if e.connection_invalidated or isinstance(e, sa_exc.InterfaceError):
                return True
            return isinstance(e, sa_exc.OperationalError) and _dbapi_transient(e.orig)
        if isinstance(e, sa_exc.TimeoutError):  # QueuePool limit: connections are stuck in a dead server
            return True
        if isinstance(e, sa_exc.PendingRollbackError):
            # A statement after a lost connection in the same transaction (Optuna's trial query falls back
            # to a second query on error); the transaction is rolled back by the time the caller sees it.
            return True
        if isinstance(e, optuna.exceptions.StorageInternalError):
            e = e.__cause__
            continue
        return False
    return False


def _database_error(exc: BaseException) -> bool:
    import optuna
    from sqlalchemy import exc as sa_exc

    return isinstance(exc, (sa_exc.DBAPIError, optuna.exceptions.StorageInternalError))


def server_restarting(exc: BaseException) -> bool:
    """True when the server says it is starting up or shutting down (worth waiting for even at start-up)."""
    text = str(exc).lower()
    code = getattr(getattr(exc, "orig", None), "pgcode", None)
    return code == "57P03" or any(m in text for m in _SERVER_RESTARTING)


def reason_of(exc: BaseException) -> str:
    """The first line of the database's own message (masked), for logs and errors."""
    orig = getattr(exc, "orig", None) or getattr(exc, "__cause__", None) or exc
    orig = getattr(orig, "orig", None) or orig
    lines = [s.strip() for s in str(orig).strip().splitlines() if s.strip()]
    return mask(lines[0] if lines else type(orig).__name__)


class _Local(threading.local):
    deadline: float = math.inf


class Retry:
    """Retry storage operations through an outage for up to ``retry_s`` seconds (shared by all threads).

    Args:
        retry_s: how long an outage may last, from its first failure (``storage.retry_s``).
        url: the storage URL (shown masked in the messages).
    """

    def __init__(self, retry_s: float, url: str):
        self.retry_s = float(retry_s)
        self.url = mask(url)
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self._reason = ""
        self._local = _Local()
        #: Monotonic time the last outage ended (-inf: none yet), and how many there were.
        self.back_at = -math.inf
        self.outages = 0

    @property
    def down(self) -> bool:
        """Whether an outage is under way (the last call failed)."""
        return self._down_since is not None

    def call(self, fn: Callable[..., T], *args: Any, check: Callable[[], tuple[bool, Any]] | None = None,
             **kwargs: Any) -> T:
        """``fn(*args, **kwargs)``, retried while it fails with a transient error.

        ``check()`` runs before each attempt after a failure; ``(True, value)`` means the
        failed attempt had done the work after all, and ``value`` is returned.

        Raises:
            StorageUnavailableError: the outage lasted longer than ``retry_s``.
            StorageError: the database refused the call for another reason (e.g. its disk is full);
                the message names the database and its own reason.
        """
        attempt, failed = 0, False
        while True:
            try:
                with held():
                    if failed and check is not None:
                        done, value = check()
                        if done:
                            self._up()
                            return value
                    result = fn(*args, **kwargs)
            except Exception as e:
                if not is_transient(e):
                    if failed:
                        self._up()  # the database answered
                    if _database_error(e):
                        raise StorageError(
                            f"The study database {self.url} failed: {reason_of(e)}. Check the database (disk "
                            "space, permissions, the server's log); the study keeps every finished trial.") from e
                    raise
                failed = True
                time.sleep(self._down(e, attempt))
                attempt += 1
                continue
            self._up()
            return result

    @contextlib.contextmanager
    def patience(self, seconds: float) -> Iterator[None]:
        """Wait at most ``seconds`` more for the database in this thread (e.g. while stopping on a signal)."""
        old = self._local.deadline
        self._local.deadline = min(old, time.monotonic() + seconds)
        try:
            yield
        finally:
            self._local.deadline = old

    # -- outage state --------------------------------------------------------------------------
    def _down(self, exc: BaseException, attempt: int) -> float:
        now = time.monotonic()
        with self._lock:
            if self._down_since is None:
                self._down_since = now
                self._reason = reason_of(exc)
                self.outages += 1
                log.warning("storage: lost the study database %s (%s); retrying for up to %g s (storage.retry_s)",
                            self.url, self._reason, self.retry_s)
            since, reason = self._down_since, self._reason
        remaining = min(since + self.retry_s, self._local.deadline) - now
        if remaining <= 0:
            raise StorageUnavailableError(
                f"The study database {self.url} has been unreachable for {now - since:.0f} s, longer than "
                f"storage.retry_s={self.retry_s:g} ({reason}). Every finished trial is safe in the study; the "
                "trial in flight is queued again by the next worker that reaches the database. Run the same "
                "command again once the database is back (or raise storage.retry_s to wait longer).") from None
        delay = min(BACKOFF_MAX, BACKOFF_BASE * 2 ** attempt * (0.5 + random.random()))
        return max(0.05, min(delay, remaining))

    def _up(self) -> None:
        if self._down_since is None:
            return
        with self._lock:
            if self._down_since is None:
                return
            lasted = time.monotonic() - self._down_since
            self._down_since = None
            self.back_at = time.monotonic()
        log.warning("storage: the study database %s is back after %.1f s; carrying on", self.url, lasted)
