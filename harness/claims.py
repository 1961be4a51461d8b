"""Atomic claims in the study's own database: one evaluation per plan, one grid set-up.

Optuna's storage has no "insert if absent" for study-level attributes, and its
GridSampler repeats points when workers run concurrently. qsweep therefore keeps
one small table, ``qsweep_claims``, next to Optuna's tables in the same
database (SQLite or PostgreSQL). Its primary key ``(study_id, kind, key)`` is
the uniqueness guarantee: of N workers inserting the same row, exactly one
succeeds, whatever the engine.

* ``kind="plan"``: ``key`` is a :meth:`QuantPlan.digest`, ``owner`` the number
  of the trial that evaluates it. Another trial with the same plan reads the
  owner and reuses its result; if the owner died, :meth:`Claims.take_over`
  moves the claim with a compare-and-swap ``UPDATE ... WHERE owner = old``.
* ``kind="lock"``: a lease lock (``owner`` a worker id, ``expires`` a unix
  time) that serialises one-off set-up such as enqueuing the grid; a lease
  whose holder died expires and can be taken.

Every method is one unit of work retried through a database outage by the
``retry`` policy (:class:`harness.study.retry.Retry`, shared with the study's
storage), and each is idempotent: an insert whose commit was lost finds its own
row on the retry (a claim returns its owner, a compare-and-swap sees the new
owner, a lock its holder).

Example:
    >>> from sqlalchemy import create_engine
    >>> claims = Claims(create_engine("sqlite://"))
    >>> claims.claim_plan(1, "abc", 0), claims.claim_plan(1, "abc", 5)
    (0, 0)
    >>> claims.take_over(1, "abc", old=0, new=5)
    True
"""
from __future__ import annotations

import contextlib
import random
import time
from typing import Any, Iterator

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from harness.errors import StorageError
from harness.secrets import mask

_metadata = sa.MetaData()
_claims = sa.Table(
    "qsweep_claims",
    _metadata,
    sa.Column("study_id", sa.Integer, primary_key=True),
    sa.Column("kind", sa.String(16), primary_key=True),
    sa.Column("key", sa.String(255), primary_key=True),
    sa.Column("owner", sa.String(255), nullable=False),
    sa.Column("expires", sa.Float, nullable=True),
)


class Claims:
    """The ``qsweep_claims`` table on an SQLAlchemy engine (created if missing).

    ``retry`` (a :class:`harness.study.retry.Retry`) runs each database operation through an
    outage; without one, operations run once.
    """

    def __init__(self, engine: sa.engine.Engine, retry: Any = None):
        self.engine = engine
        self._retry = retry
        self._run(self._create)

    def _run(self, fn: Any, *args: Any) -> Any:
        return fn(*args) if self._retry is None else self._retry.call(fn, *args)

    def _create(self) -> None:
        engine = self.engine
        for attempt in range(5):
            try:
                _metadata.create_all(engine, checkfirst=True)
                break
            except (sa_exc.IntegrityError, sa_exc.ProgrammingError):
                # Another worker created it at the same moment (PostgreSQL reports the
                # race as a duplicate type/table); check again.
                time.sleep(0.2 + random.random() * 0.3)
        else:  # pragma: no cover - only on a persistently broken database
            raise StorageError(f"Cannot create the table qsweep_claims in {mask(engine.url)}.")

    # -- plans -----------------------------------------------------------------------------
    def claim_plan(self, study_id: int, plan_hash: str, trial_number: int) -> int:
        """Claim ``plan_hash`` for ``trial_number``; return the owner (this trial if it won)."""
        return self._run(self._claim_plan, study_id, plan_hash, trial_number)

    def _claim_plan(self, study_id: int, plan_hash: str, trial_number: int) -> int:
        try:
            with self.engine.begin() as conn:
                conn.execute(sa.insert(_claims).values(
                    study_id=study_id, kind="plan", key=plan_hash, owner=str(trial_number), expires=None))
            return trial_number
        except sa_exc.IntegrityError:
            owner = self._plan_owner(study_id, plan_hash)
            if owner is None:  # the row vanished between insert and read: try again
                return self._claim_plan(study_id, plan_hash, trial_number)
            return owner

    def plan_owner(self, study_id: int, plan_hash: str) -> int | None:
        """The trial number that owns ``plan_hash``, or None when unclaimed."""
        return self._run(self._plan_owner, study_id, plan_hash)

    def _plan_owner(self, study_id: int, plan_hash: str) -> int | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(_claims.c.owner).where(
                _claims.c.study_id == study_id, _claims.c.kind == "plan", _claims.c.key == plan_hash)).first()
        return None if row is None else int(row[0])

    def take_over(self, study_id: int, plan_hash: str, old: int, new: int) -> bool:
        """Move the claim from trial ``old`` (dead) to ``new``; False if someone else did first
        (after a lost commit, the retry finds ``new`` the owner: also False, and the caller reads the owner)."""
        return self._run(self._take_over, study_id, plan_hash, old, new)

    def _take_over(self, study_id: int, plan_hash: str, old: int, new: int) -> bool:
        with self.engine.begin() as conn:
            res = conn.execute(sa.update(_claims).where(
                _claims.c.study_id == study_id, _claims.c.kind == "plan", _claims.c.key == plan_hash,
                _claims.c.owner == str(old)).values(owner=str(new)))
        return res.rowcount == 1

    def forget_study(self, study_id: int) -> None:
        """Delete every claim of ``study_id`` (called when that study id is newly created)."""
        self._run(self._forget_study, study_id)

    def _forget_study(self, study_id: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.delete(_claims).where(_claims.c.study_id == study_id))

    # -- lease lock ------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, study_id: int, name: str, owner: str, lease: float = 120.0,
             wait: float = 600.0) -> Iterator[None]:
        """Hold the lease lock ``name`` of ``study_id`` for the ``with`` body.

        Waits up to ``wait`` seconds for another holder; a lease older than
        ``lease`` seconds (its holder died) is taken over.
        """
        deadline = time.monotonic() + wait
        while not self._run(self._try_lock, study_id, name, owner, lease):
            if time.monotonic() > deadline:
                raise StorageError(
                    f"Timed out after {wait:.0f} s waiting for the {name!r} lock of study id {study_id} "
                    f"in {mask(self.engine.url)} (held by another qsweep worker).")
            time.sleep(0.2 + random.random() * 0.3)
        try:
            yield
        finally:
            self._run(self._unlock, study_id, name, owner)

    def _unlock(self, study_id: int, name: str, owner: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.delete(_claims).where(
                _claims.c.study_id == study_id, _claims.c.kind == "lock", _claims.c.key == name,
                _claims.c.owner == owner))

    def _try_lock(self, study_id: int, name: str, owner: str, lease: float) -> bool:
        now = time.time()
        try:
            with self.engine.begin() as conn:
                conn.execute(sa.insert(_claims).values(
                    study_id=study_id, kind="lock", key=name, owner=owner, expires=now + lease))
            return True
        except sa_exc.IntegrityError:
            pass
        with self.engine.begin() as conn:
            res = conn.execute(sa.update(_claims).where(
                _claims.c.study_id == study_id, _claims.c.kind == "lock", _claims.c.key == name,
                sa.or_(_claims.c.expires < now, _claims.c.owner == owner),
            ).values(owner=owner, expires=now + lease))
        return res.rowcount == 1
