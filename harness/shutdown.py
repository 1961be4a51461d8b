"""Graceful stop on SIGINT, SIGTERM and SIGHUP: the signal becomes :class:`Stopped` in the main thread.

``qsweep`` installs :func:`handle_signals` for its run: Ctrl-C (SIGINT), SIGTERM
(Kubernetes, Slurm, systemd, ``docker stop``) and SIGHUP (a closed terminal)
all raise :class:`Stopped` — a :class:`KeyboardInterrupt`, so every Ctrl-C path
handles it — with the signal's name and exit status (128 + its number: 130,
143, 129). The worker then puts the trial in flight back in the queue and the
run directory is written from the finished trials.

A signal that arrives while a storage operation runs (:func:`held`) is raised
when the operation returns, so a commit is never cut in half and its outcome
is known. A second signal does not wait. One whose exception Python swallowed
(raised inside a finalizer) is raised again at the next batch or trial (:func:`check`), and
its "Exception ignored in ..." traceback is not printed (:func:`_unraisable`).

Example:
    >>> import signal
    >>> Stopped(signal.SIGTERM).exit_code, Stopped(signal.SIGTERM).description
    (143, 'terminated by SIGTERM')
"""
from __future__ import annotations

import contextlib
import signal
import sys
import threading
from typing import Any, Iterator

__all__ = ["Stopped", "handle_signals", "held", "check", "SIGNALS"]

#: The signals qsweep stops on gracefully, with what the closing line says.
SIGNALS = {signal.SIGINT: "interrupted (Ctrl-C)", signal.SIGTERM: "terminated by SIGTERM",
           signal.SIGHUP: "hung up (SIGHUP)"}


class Stopped(KeyboardInterrupt):
    """A stop signal arrived: ``signum``, what happened (``description``) and the ``exit_code`` (128 + signum)."""

    def __init__(self, signum: int = signal.SIGINT):
        self.signum = int(signum)
        super().__init__(self.description)

    @property
    def description(self) -> str:
        return SIGNALS.get(signal.Signals(self.signum), f"stopped by signal {self.signum}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    @classmethod
    def of(cls, exc: BaseException) -> "Stopped":
        """``exc`` as a :class:`Stopped` (a plain KeyboardInterrupt is Ctrl-C); called where the stop
        is caught and handled, which is what :func:`check` needs to know."""
        _handled.append(True)
        return exc if isinstance(exc, Stopped) else cls(signal.SIGINT)


class _State(threading.local):
    depth = 0


_held = _State()
_pending: list[int] = []
_received: list[int] = []
_handled: list[bool] = []  # a Stopped was caught (Stopped.of): check() has nothing to raise


def _handler(signum: int, _frame: Any) -> None:
    first = not _received
    _received.append(signum)
    if first and _held.depth > 0:
        _pending.append(signum)  # raised when the storage operation returns
        return
    raise Stopped(signum)


@contextlib.contextmanager
def held() -> Iterator[None]:
    """Hold a stop signal back until the ``with`` body (one storage operation) returns (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _held.depth += 1
    try:
        yield
    finally:
        _held.depth -= 1
        if _held.depth == 0 and _pending:
            raise Stopped(_pending.pop())


def check() -> None:
    """Raise the stop signal received earlier if it never surfaced (main thread, outside :func:`held`).

    Python ignores an exception raised inside a finalizer (a weakref callback, ``__del__``: "Exception
    ignored in ..."), so a signal whose handler ran there would be lost and the run would carry on to
    the end (seen once: SIGTERM during SQLAlchemy's garbage-collection callback). The worker's loop
    and the evaluation's batches call this; once a :class:`Stopped` has been caught
    (:meth:`Stopped.of`) it raises nothing.
    """
    if (_received and not _handled and _held.depth == 0
            and threading.current_thread() is threading.main_thread()):
        raise Stopped(_received[0])


def received() -> int | None:
    """The first stop signal received in this process (None if none)."""
    return _received[0] if _received else None


def _unraisable(previous: Any) -> Any:
    """A ``sys.unraisablehook`` that drops a :class:`Stopped` raised inside a finalizer and passes
    everything else to ``previous``.

    Python would print that stop as "Exception ignored in ..." with a traceback, which reads like a
    crash although nothing went wrong: :func:`check` raises the same stop at the next batch or trial.
    """
    def hook(unraisable: Any) -> None:
        if isinstance(unraisable.exc_value, Stopped):
            return
        previous(unraisable)
    return hook


@contextlib.contextmanager
def handle_signals() -> Iterator[None]:
    """Install the graceful handlers of :data:`SIGNALS` for the ``with`` body (main thread), then restore."""
    old = {s: signal.signal(s, _handler) for s in SIGNALS}
    old_hook = sys.unraisablehook
    sys.unraisablehook = _unraisable(old_hook)
    for state in (_pending, _received, _handled):
        state.clear()
    try:
        yield
    finally:
        sys.unraisablehook = old_hook
        for s, h in old.items():
            signal.signal(s, h)
        for state in (_pending, _received, _handled):
            state.clear()
