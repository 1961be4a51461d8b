"""The heartbeat of a running trial: a daemon thread records it every ``heartbeat_interval`` seconds.

A trial whose heartbeat stops for ``storage.grace_period`` seconds is declared
dead by any worker (:func:`harness.study.reap`) and queued again. Each beat is
retried through a database outage (:class:`harness.study.retry.Retry`); when
the outage outlasts ``storage.retry_s`` the thread keeps trying once per
interval (the main loop is the one that gives up and says so).
"""
from __future__ import annotations

import logging
import threading
from typing import Any

from harness.study.db import StudyDB

log = logging.getLogger(__name__)


class Heartbeat:
    """Record a trial's heartbeat every ``interval`` seconds in a daemon thread (``with`` block)."""

    def __init__(self, db: StudyDB, trial_id: int):
        self.db, self.trial_id = db, trial_id
        self.interval = db.heartbeat_interval() or 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "Heartbeat":
        if self.interval:
            self.db.record_heartbeat(self.trial_id)
            self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{self.trial_id}", daemon=True)
            self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.db.record_heartbeat(self.trial_id)
            except Exception as e:  # noqa: BLE001 - a lost database must not kill the trial; the next beat retries
                log.debug("heartbeat of trial id %d failed: %s", self.trial_id, e)

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            # A beat may be waiting out a database outage: do not hold the trial loop (or a stop) for it;
            # the daemon thread ends after that beat.
            self._thread.join(timeout=max(5.0, float(self.interval)))
