"""Study machinery on a real SQLite file: atomic claims, queue pops, heartbeats, dead workers, storage errors."""
from __future__ import annotations

import multiprocessing as mp
import subprocess
import time

import optuna
import pytest
from optuna.trial import TrialState

from harness.claims import Claims
from harness.errors import ConfigError, StorageError
from harness.study import (
    MACHINE, WORKER_ATTR, StudyDB, budget_used, counted_rows, counted_trials, open_study, pop_waiting, reap, requeue,
    retried_numbers,
)
from tests.sweep.support import storage as _storage


def _claim_in_process(url, number, queue):
    storage = _storage(url)
    claims = Claims(storage.engine)
    queue.put((number, claims.claim_plan(1, "plan-abc", number)))


def _pop_in_process(url, name, queue):
    storage = _storage(url)
    study = optuna.load_study(study_name=name, storage=storage)
    got = []
    while (t := pop_waiting(StudyDB(study))) is not None:
        got.append(t.number)
        study.tell(t, [1.0, 1.0])
    queue.put(got)


def test_plan_claim_has_exactly_one_winner_across_processes(tmp_path):
    url = f"sqlite:///{tmp_path / 'c.db'}"
    Claims(_storage(url).engine)
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_claim_in_process, args=(url, n, queue)) for n in range(4)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    owners = {owner for _, owner in results}
    assert len(owners) == 1  # everybody sees the same owner
    (winner,) = owners
    assert winner in {n for n, _ in results}


def test_take_over_is_compare_and_swap(tmp_path):
    claims = Claims(_storage(f"sqlite:///{tmp_path / 'c.db'}").engine)
    assert claims.claim_plan(7, "h", 3) == 3
    assert claims.claim_plan(7, "h", 5) == 3
    assert claims.take_over(7, "h", old=3, new=5) is True
    assert claims.take_over(7, "h", old=3, new=6) is False  # the claim moved already
    assert claims.plan_owner(7, "h") == 5
    assert claims.plan_owner(8, "h") is None  # claims are per study


def test_lease_lock_blocks_and_expires(tmp_path):
    claims = Claims(_storage(f"sqlite:///{tmp_path / 'c.db'}").engine)
    with claims.lock(1, "grid", "worker-a", lease=60):
        with pytest.raises(StorageError, match="waiting for the 'grid' lock"):
            with claims.lock(1, "grid", "worker-b", wait=1.0):
                pass
    with claims.lock(1, "grid", "worker-b"):  # released
        pass
    assert claims._try_lock(1, "g2", "dead-worker", lease=0.5)
    time.sleep(0.6)
    assert claims._try_lock(1, "g2", "worker-c", lease=60)  # the dead holder's lease expired


def test_queue_pops_each_trial_once_across_processes(tmp_path):
    url = f"sqlite:///{tmp_path / 'q.db'}"
    storage = _storage(url)
    db, _ = open_study(storage, "q", ["minimize", "maximize"], experiment={"x": 1})
    for i in range(24):
        db.enqueue({"x": i})
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_pop_in_process, args=(url, "q", queue)) for _ in range(3)]
    for p in procs:
        p.start()
    got = [n for _ in procs for n in queue.get(timeout=300)]
    for p in procs:
        p.join(timeout=60)
    assert sorted(got) == list(range(24))


def test_stale_heartbeat_fails_the_trial_and_queues_it_again(tmp_path):
    storage = _storage(f"sqlite:///{tmp_path / 's.db'}", heartbeat=1, grace=2, max_retry=1)
    db, _ = open_study(storage, "s", ["minimize", "maximize"], experiment={})
    db.enqueue({"nbits": 4}, user_attrs={"grid_point": "nbits=4"})
    t = pop_waiting(db)
    assert t.suggest_categorical("nbits", [8, 4]) == 4
    t.set_user_attr("size_bytes", 123)  # a half-written result must not be inherited
    db.record_heartbeat(db.trial_id(t))
    db.set_system_attr(db.trial_id(t), WORKER_ATTR, "another-machine#1")
    time.sleep(3.2)
    assert reap(db) == [t.number]
    trials = db.trials()
    dead, retry = trials[0], trials[1]
    assert dead.state == TrialState.FAIL and retry.state == TrialState.WAITING
    assert retry.params == {"nbits": 4} and retry.user_attrs == {"grid_point": "nbits=4"}
    assert retry.system_attrs["failed_trial"] == dead.number and WORKER_ATTR not in retry.system_attrs
    assert retried_numbers(trials) == {dead.number: retry.number}
    assert [x.number for x in counted_trials(trials)] == [retry.number]
    assert budget_used(trials) == 0  # the retry is only queued
    # the retry dies too: max_retry=1 stops the chain
    t2 = pop_waiting(db)
    db.record_heartbeat(db.trial_id(t2))
    db.set_system_attr(db.trial_id(t2), WORKER_ATTR, "another-machine#1")
    time.sleep(3.2)
    assert reap(db) == [t2.number]
    assert len(db.trials()) == 2


def test_counted_trials_and_rows_follow_one_rule(tmp_path):
    """A retry chain 0 -> 2 -> 3 (trial 3 is the last retry and counts), a skipped trial, a plain failure."""
    from harness.outputs import trials_frame

    storage = _storage(f"sqlite:///{tmp_path / 'r.db'}")
    db, _ = open_study(storage, "r", ["minimize", "maximize"], experiment={})
    for i in range(5):
        db.enqueue({"x": i})
    t0, t1 = pop_waiting(db), pop_waiting(db)
    requeue(db, db.trial_id(t0), "interrupted by Ctrl-C")  # -> trial 5, a WAITING retry of 0
    db.tell(t1, state=TrialState.PRUNED)
    for _ in range(3):  # trials 2, 3, 4
        db.tell(pop_waiting(db), values=[1.0, 1.0])
    t5 = pop_waiting(db)
    assert t5.number == 5
    requeue(db, db.trial_id(t5), "interrupted again")  # -> trial 6 retries 5 (chain 0 -> 5 -> 6)
    t6 = pop_waiting(db)
    db.tell(t6, state=TrialState.FAIL)  # the last of the chain failed for good: it counts
    trials = db.trials()
    assert retried_numbers(trials) == {0: 5, 5: 6}
    counted = [t.number for t in counted_trials(trials)]
    assert counted == [2, 3, 4, 6]
    table = trials_frame(trials, "accuracy")
    assert counted_rows(table)["trial"].tolist() == counted
    # the error text is for people; the rule reads the structured retry record
    assert table.set_index("trial").loc[5, "error"].endswith("retried as trial 6")
    assert counted_rows(table.assign(error=None))["trial"].tolist() == counted


def test_dead_process_on_this_machine_is_noticed_at_once(tmp_path):
    storage = _storage(f"sqlite:///{tmp_path / 'd.db'}", heartbeat=30, grace=60)
    db, _ = open_study(storage, "d", ["minimize", "maximize"], experiment={})
    db.enqueue({"nbits": 4})
    t = pop_waiting(db)
    gone = subprocess.Popen(["true"])
    gone.wait()
    db.record_heartbeat(db.trial_id(t))
    db.set_system_attr(db.trial_id(t), WORKER_ATTR, f"{MACHINE}#{gone.pid}")
    assert reap(db) == [t.number]
    assert [x.state for x in db.trials()] == [TrialState.FAIL, TrialState.WAITING]


def test_interrupted_trial_goes_back_to_the_queue(tmp_path):
    storage = _storage(f"sqlite:///{tmp_path / 'i.db'}")
    db, _ = open_study(storage, "i", ["minimize", "maximize"], experiment={})
    db.enqueue({"nbits": 2})
    t = pop_waiting(db)
    requeue(db, db.trial_id(t), "interrupted by Ctrl-C")
    dead, retry = db.trials()
    assert dead.state == TrialState.FAIL and dead.user_attrs["error"] == "interrupted by Ctrl-C"
    assert retry.state == TrialState.WAITING and retry.system_attrs["fixed_params"] == {"nbits": 2}


def test_joining_a_study_of_another_experiment_is_refused(tmp_path):
    storage = _storage(f"sqlite:///{tmp_path / 'e.db'}")
    open_study(storage, "e", ["minimize", "maximize"], experiment={"space": {"nbits": [8]}, "seed": 0})
    _, created = open_study(storage, "e", ["minimize", "maximize"], experiment={"space": {"nbits": [8]}, "seed": 0})
    assert created is False
    with pytest.raises(ConfigError) as exc:
        open_study(storage, "e", ["minimize", "maximize"], experiment={"space": {"nbits": [8, 4]}, "seed": 1})
    assert "space.nbits: [8] in the study, [8, 4] now" in str(exc.value) and "seed: 0 in the study, 1 now" in str(exc.value)
    with pytest.raises(ConfigError, match="optimises"):
        open_study(storage, "e", ["minimize", "minimize"], experiment={"space": {"nbits": [8]}, "seed": 0})


@pytest.mark.parametrize("url, message", [
    ("not a url", "is not a database URL"),
    ("nosuchdb://host/db", "Cannot open the study storage nosuchdb://host/db"),
    ("sqlite:////proc/qsweep-no-such-dir/x.db", "Cannot create the folder"),
])
def test_bad_storage_urls(url, message):
    with pytest.raises(StorageError, match=message):
        _storage(url)


def test_heartbeat_settings_are_checked():
    with pytest.raises(ConfigError, match="grace_period"):
        _storage("sqlite://", heartbeat=10, grace=5)
