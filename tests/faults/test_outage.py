"""Database outages under real workers: a PostgreSQL 15 restart mid-run, and a server that stays away.

The server is started by the test (:mod:`tests.faults.pgserver`) and restarted
with ``pg_ctl restart -m fast`` while three qsweep workers share one grid.
"""
from __future__ import annotations

import subprocess
import time

import pytest

from tests.faults.support import (CNN_GRID, CNN_POINTS, check_grid, load, logs, n_complete, start_worker, wait_for,
                                  workers_started)
from tests.sweep.support import cli_command, cli_env

pytestmark = pytest.mark.postgres


#: The restart test's grid: 24 points instead of 12, so that two workers that started early cannot finish the
#: grid while the third is still starting (they did once on a fast CPU: the restart came after the last point).
RESTART_GRID = [a for a in CNN_GRID if not a.startswith("search.space.nbits=")] + ["search.space.nbits=[8,7,6,5,4,3,2,1]"]
RESTART_POINTS = 24


def test_three_workers_ride_out_a_server_restart(pg, tmp_path):
    args = RESTART_GRID + [f"storage.url={pg.url}", "study.name=restart", "storage.retry_s=60"]
    paths = [tmp_path / f"w{i}.log" for i in range(3)]
    procs = [start_worker(args + [f"hydra.run.dir={tmp_path / f'w{i}'}"], tmp_path, paths[i]) for i in range(3)]
    study = wait_for(pg.url, "restart", lambda s: n_complete(s) >= 2 and workers_started(s) == 3, procs)
    before = n_complete(study)
    took = pg.restart()
    for p in procs:
        p.wait(timeout=900)
    text = logs(paths)
    assert [p.returncode for p in procs] == [0, 0, 0], "\n\n".join(text)
    study = load(pg.url, "restart")
    assert before < RESTART_POINTS, "the restart came after the grid was done"
    check_grid(study, RESTART_POINTS)
    assert len(study.trials) == RESTART_POINTS  # nothing failed, requeued or repeated
    joined = "\n".join(text)
    assert "lost the study database" in joined and "is back after" in joined, joined
    assert "Traceback" not in joined and "declared dead" not in joined, joined
    for t in text:  # one warning per outage and worker, and one line when it is back
        assert t.count("lost the study database") <= 1 and t.count("is back after") == t.count("lost the study")
    print(f"restart took {took:.1f} s; {before} of {RESTART_POINTS} points were complete before it")


def test_a_server_away_longer_than_retry_s_stops_the_worker_and_a_rerun_continues(pg, tmp_path):
    args = CNN_GRID + [f"storage.url={pg.url}", "study.name=away", "storage.retry_s=4"]
    log = tmp_path / "first.log"
    proc = start_worker(args + [f"hydra.run.dir={tmp_path / 'first'}"], tmp_path, log)
    wait_for(pg.url, "away", lambda s: n_complete(s) >= 2, [proc])
    pg.stop("fast")
    t0 = time.monotonic()
    proc.wait(timeout=300)
    waited = time.monotonic() - t0
    text = log.read_text()
    assert proc.returncode == 75, text
    errors = [line for line in text.splitlines() if line.startswith("qsweep: error:")]
    assert len(errors) == 1, text
    assert "unreachable for" in errors[0] and "storage.retry_s=4" in errors[0] and "Run the same command" in errors[0]
    assert "Traceback" not in text
    assert waited < 60, f"the worker took {waited:.0f} s to give up"
    pg.start()
    second = subprocess.run(cli_command(args + [f"hydra.run.dir={tmp_path / 'second'}"]), cwd=tmp_path,
                            env=cli_env(), capture_output=True, text=True, timeout=900)
    assert second.returncode == 0, second.stdout + second.stderr
    check_grid(load(pg.url, "away"), CNN_POINTS)


def test_an_outage_longer_than_the_grace_period_reaps_no_live_trial(pg, tmp_path):
    """The server is down 8 s, twice the heartbeat grace period: every heartbeat is stale when it comes back,
    yet no live trial is declared dead (reapers wait a grace period after an outage) or evaluated twice."""
    args = CNN_GRID + [f"storage.url={pg.url}", "study.name=long", "storage.retry_s=60"]
    paths = [tmp_path / f"w{i}.log" for i in range(3)]
    procs = [start_worker(args + [f"hydra.run.dir={tmp_path / f'w{i}'}"], tmp_path, paths[i]) for i in range(3)]
    study = wait_for(pg.url, "long", lambda s: n_complete(s) >= 2 and workers_started(s) == 3, procs)
    before = n_complete(study)
    pg.stop("fast")
    time.sleep(8)
    pg.start()
    for p in procs:
        p.wait(timeout=900)
    text = "\n".join(logs(paths))
    assert [p.returncode for p in procs] == [0, 0, 0], text
    study = load(pg.url, "long")
    assert before < CNN_POINTS
    check_grid(study, CNN_POINTS)
    assert len(study.trials) == CNN_POINTS, [(t.number, t.state.name) for t in study.trials]
    assert "declared dead" not in text and "queued again" not in text and "Traceback" not in text, text
    assert text.count("lost the study database") >= 1
