"""The retry policy on a real SQLite study: which errors are transient, and commits whose answer was lost.

A lost answer is made real at the driver: the storage's dialect commits the
transaction (it is in the database file) and then raises the error of a
connection that died (SQLAlchemy invalidates the connection, as when a server
goes away mid-commit). Every write that must happen once (a new
trial, a state change) must still happen exactly once after the retry.
"""
from __future__ import annotations

import logging
import sqlite3

import optuna
import pytest
import sqlalchemy as sa
from optuna.trial import TrialState
from sqlalchemy import exc as sa_exc

from harness.errors import StorageError, StorageUnavailableError
from harness.study import RetryDeadTrial, is_transient, open_study, pop_waiting
from harness.study.retry import Retry
from tests.sweep.support import storage as open_test_storage


def _dropped() -> sa_exc.OperationalError:
    return sa_exc.OperationalError("COMMIT", {}, Exception("server closed the connection unexpectedly"))


class LoseAnswers:
    """Fail the next ``n`` commits that wrote something, after they committed (the client never hears back)."""

    def __init__(self, storage: optuna.storages.RDBStorage):
        self.n, self.lost = 0, 0
        wrote: set[int] = set()
        dialect = storage.engine.dialect
        commit = dialect.do_commit

        def before_cursor_execute(conn, cursor, statement, *args) -> None:
            if statement.lstrip().split(None, 1)[0].upper() in ("INSERT", "UPDATE", "DELETE"):
                wrote.add(id(conn.connection.dbapi_connection))

        def do_commit(connection) -> None:
            commit(connection)
            raw = id(getattr(connection, "dbapi_connection", connection))  # SQLAlchemy passes its pool proxy
            if raw in wrote:
                wrote.discard(raw)
                if self.n > 0:
                    self.n -= 1
                    self.lost += 1
                    raise sqlite3.ProgrammingError("Cannot operate on a closed database.")  # a dead connection

        sa.event.listen(storage.engine, "before_cursor_execute", before_cursor_execute)
        dialect.do_commit = do_commit


def _db(tmp_path, name="q"):
    storage = open_test_storage(f"sqlite:///{tmp_path / 'r.db'}")
    db, _ = open_study(storage, name, ["minimize", "maximize"], experiment={})
    return storage, db


def test_transient_errors():
    assert is_transient(_dropped())
    assert is_transient(optuna.exceptions.StorageInternalError("x").with_traceback(None)) is False
    wrapped = optuna.exceptions.StorageInternalError("An exception is raised during the commit.")
    wrapped.__cause__ = _dropped()
    assert is_transient(wrapped)
    assert is_transient(sa_exc.OperationalError("SELECT", {}, sqlite3.OperationalError("database is locked")))
    assert not is_transient(sa_exc.OperationalError("SELECT", {}, sqlite3.OperationalError("no such table: x")))
    assert not is_transient(sa_exc.IntegrityError("INSERT", {}, Exception("duplicate key")))
    invalidated = sa_exc.DBAPIError("SELECT", {}, Exception("gone"), connection_invalidated=True)
    assert is_transient(invalidated)
    assert is_transient(sa_exc.InterfaceError("SELECT", {}, Exception("connection already closed")))
    assert not is_transient(ValueError("x"))


def test_an_outage_logs_once_and_gives_up_after_retry_s(caplog):
    retry = Retry(retry_s=1.0, url="postgresql://me:hunter2@db/x")
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise _dropped()
        return "ok"

    with caplog.at_level(logging.WARNING, logger="qsweep"):
        assert retry.call(flaky) == "ok"
    text = caplog.text
    assert text.count("lost the study database") == 1 and text.count("is back after") == 1
    assert "hunter2" not in text and "postgresql://me:***@db/x" in text

    def down():
        raise _dropped()

    with pytest.raises(StorageUnavailableError, match=r"unreachable for 1 s, longer than storage.retry_s=1 "):
        retry.call(down)
    assert retry.outages == 2


def test_a_database_error_that_is_no_outage_names_the_database():
    retry = Retry(retry_s=5, url="sqlite:////data/qsweep.db")

    def full():
        raise sa_exc.OperationalError("INSERT", {}, sqlite3.OperationalError("database or disk is full"))

    with pytest.raises(StorageError, match=r"sqlite:////data/qsweep.db failed: database or disk is full"):
        retry.call(full)


def test_lost_commit_answers_never_write_twice(tmp_path):
    storage, db = _db(tmp_path)
    lose = LoseAnswers(storage)

    lose.n = 1  # the grid point is queued, the answer lost: queued once
    db.enqueue({"x": 1}, user_attrs={"grid_point": "x=1"})
    assert [t.state for t in db.trials()] == [TrialState.WAITING]

    lose.n = 1  # WAITING -> RUNNING committed, answer lost: still this worker's trial, taken once
    trial = pop_waiting(db)
    assert trial is not None and trial.number == 0
    assert [t.state for t in db.trials()] == [TrialState.RUNNING]
    assert db.in_flight() == [db.trial_id(trial)]

    lose.n = 1  # the result told, answer lost: told once, no UpdateFinishedTrialError
    trial.suggest_float("x", 0, 2)
    db.tell(trial, values=[1.0, 0.5])
    (done,) = db.trials()
    assert done.state == TrialState.COMPLETE and done.values == [1.0, 0.5]
    assert db.in_flight() == []

    lose.n = 1  # a trial asked from the sampler, answer lost: one new RUNNING trial, not two
    asked = db.ask()
    assert [t.state for t in db.trials()] == [TrialState.COMPLETE, TrialState.RUNNING]

    lose.n = 2  # failing a dead trial and queueing its retry, both answers lost: one FAIL, one retry
    assert db.try_set_state(db.trial_id(asked), TrialState.FAIL)
    RetryDeadTrial(3)(db.study, db.frozen(db.trial_id(asked)))
    states = [t.state for t in db.trials()]
    assert states == [TrialState.COMPLETE, TrialState.FAIL, TrialState.WAITING], states
    assert lose.lost == 6


def test_stale_heartbeats_right_after_an_outage_are_not_reaped_then_the_trial_is_retried_once(tmp_path):
    import time

    storage, db = _db(tmp_path)
    lose = LoseAnswers(storage)
    db.enqueue({"x": 1})
    trial = pop_waiting(db)
    db.record_heartbeat(db.trial_id(trial))
    time.sleep(storage.grace_period + 1.5)  # its heartbeat goes stale
    lose.n = 1
    db.set_study_attr("touch", 1)  # an outage (one lost answer) this process rides out
    assert db.reap_paused()
    db.fail_stale_trials()
    assert [t.state for t in db.trials()] == [TrialState.RUNNING]  # everyone's heartbeat is stale: nobody reaped
    deadline = time.monotonic() + 30
    while db.reap_paused() and time.monotonic() < deadline:
        time.sleep(0.2)
    lose.n = 2  # failing it and queueing its retry, both answers lost
    db.fail_stale_trials()
    states = [t.state for t in db.trials()]
    assert states == [TrialState.FAIL, TrialState.WAITING], states
    assert db.trials()[1].system_attrs["failed_trial"] == 0 and lose.lost == 3


def test_a_popped_trial_without_heartbeat_thread_is_still_noticed(tmp_path):
    storage, db = _db(tmp_path)
    db.enqueue({"x": 1})
    trial = pop_waiting(db)
    # the transition itself recorded this worker and a first heartbeat (nothing else ran yet)
    frozen = db.frozen(db.trial_id(trial))
    assert frozen.system_attrs["qsweep:worker"]
    with storage.scoped_session() as s:
        n = s.execute(sa.text("SELECT COUNT(*) FROM trial_heartbeats WHERE trial_id = :t"),
                      {"t": db.trial_id(trial)}).scalar()
    assert n == 1
