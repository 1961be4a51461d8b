"""The soak (``python -m harness.bench soak``): 300 TPE trials, three workers on PostgreSQL, worker 0 SIGKILLed
mid-trial twice, the server restarted once; every check of :func:`harness.bench.soak.check` must hold."""
from __future__ import annotations

import pytest

from harness.bench.pgserver import missing


@pytest.mark.slow
@pytest.mark.postgres
def test_soak_300_trials_with_kills_and_a_server_restart(tmp_path):
    why = missing()
    if why:
        pytest.skip(why)
    from harness.bench.soak import soak

    figures, problems = soak(tmp_path, n_trials=300, search="tpe")
    print(figures)
    assert problems == [], problems
    assert 300 <= figures["budget_used"] <= 302 and len(figures["killed_trials"]) == 2
    assert figures["outages_seen"] >= 1 and figures["back_lines"] == figures["outages_seen"]
    assert set(figures["states"]) <= {"COMPLETE", "FAIL", "PRUNED"}
