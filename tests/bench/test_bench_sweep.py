"""The sweep benchmark's racing rows and the replay of a recorded off run (a small grid on a real zoo model)."""
from __future__ import annotations

import numpy as np

from harness.bench import sweep as bench
from harness.bench._race import changes, race
from harness.heads import Head
from harness.racing import SampleOrder
from harness.scores import Accuracy


def test_racing_rows_and_replay_on_a_small_grid(tmp_path):
    replays: dict = {}
    rows = bench.racing_rows("digits_mlp", tmp_path, 0, ["search.space.nbits=[8,4,2,1]", "search.space.mode=[linear]",
                                                         "selector=all"], replays=replays, replay_seeds=1)
    assert [r["mode"] for r in rows] == ["off", "exact", "confident"]
    assert all(r["identical"] for r in rows) and rows[0]["ratio"] == 1.0
    r = replays["digits_mlp"]
    assert r["seeds"] == 1 and r["candidates"] == rows[0]["evaluations"] // rows[0]["n"]
    assert r["exact"]["front_changed"] == 0 and r["exact"]["best_changed"] == 0 and r["exact"]["wrong_stops"] == 0
    # order 0 is the run's own order: the offline race stops exactly what the real races stopped
    assert r["exact"]["evaluations"] == rows[1]["evaluations"] and r["confident"]["evaluations"] == rows[2]["evaluations"]


def test_offline_race_counts_wrong_stops_and_front_changes():
    metric = Accuracy(Head("p", "binary", 1))
    n = 64
    good = np.ones(n)
    bad = np.zeros(n)
    order = SampleOrder.build(np.zeros(n, dtype=int), 0, 8)
    raced = race(metric, np.stack([good, bad]), [10, 20], order, "exact")
    assert raced["done"] == {0} and raced["stops"] == 1 and raced["wrong"] == 0
    assert raced["seen"] == n + 8  # the bad one stops after the first chunk
    assert changes(raced, 1.0) == (False, False)


def test_default_model_names_a_larger_model_that_is_not_built(tmp_path, monkeypatch, capsys):
    """Without minilm_l6 built the benchmark races the largest bundled model with 1 000 samples and says why."""
    monkeypatch.setenv("QSWEEP_ZOO_DIR", str(tmp_path))  # an empty built-model folder
    assert bench.default_model(1000) == "crepe_tiny"
    err = capsys.readouterr().err
    assert "minilm_l6 (22,417,153 weights) is larger than crepe_tiny but is not built" in err
    assert "python -m harness.zoo.build_minilm_l6" in err and "resemblyzer" not in err  # its default build has 480


def test_reuse_rows_are_identical_with_and_without_the_cache(tmp_path):
    """search=sensitivity without and with activation reuse on a bounded test set: same table, the cache is used."""
    row = bench.reuse_rows("digits_cnn", tmp_path, 0, "sensitivity",
                           ["search.space.nbits=[4]", "search.space.mode=[linear]", "data.limit=64"])
    assert row["identical"] and row["trials"] > 1
    assert row["hits"] > 0 and row["without"] > 0 and row["with"] > 0
    runs = sorted(p.name for p in tmp_path.iterdir() if p.is_dir())
    assert runs == ["digits_cnn-sensitivity-reuse-with", "digits_cnn-sensitivity-reuse-without"]
