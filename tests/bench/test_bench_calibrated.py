"""The calibrated benchmark's plumbing (fast, on a bundled model) and its whole run (slow)."""
from __future__ import annotations

import json

import pytest

from harness.bench import calibrated as bench


def test_runs_on_a_zoo_model_and_reports_every_cell(tmp_path, capsys):
    out = tmp_path / "figures.json"
    assert bench.main(["--model", "digits_mlp", "--modes", "linear,kmeans_lut", "--bits", "2", "--grid", "none",
                       "--large", "none", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| digits_mlp | linear | 2 |" in text and "digits_mlp: 4-bit" not in text
    figures = json.loads(out.read_text())["models"][0]
    assert figures["split"]["calibration_n"] + figures["split"]["test_n"] == 450
    cells = {(r["mode"], name) for r in figures["rows"] for name in r["cells"]}
    assert cells == {("linear", c) for c in ("RTN", "RTN+BC", "GPTQ", "GPTQ+BC")} | {
        ("kmeans_lut", c) for c in ("RTN", "RTN+BC", "GPTQ", "GPTQ+BC", "AWKM")}
    assert figures["stats_s"] > 0 and figures["coremltools4_s"] is not None and 0 < figures["float"] <= 1


def test_a_model_file_needs_its_data():
    with pytest.raises(SystemExit):
        bench.main(["--model", "some.mlmodel", "--grid", "none", "--large", "none"])


def test_verdict_names_the_targets():
    res = [{"model": "m", "float": 0.8, "rows": [
        {"mode": "linear", "nbits": 4, "cells": {"RTN": {"accuracy": 0.7}, "GPTQ": {"accuracy": 0.795}}},
        {"mode": "linear", "nbits": 3, "cells": {"RTN": {"accuracy": 0.3}, "GPTQ": {"accuracy": 0.74}}}]}]
    (line,) = bench.verdicts(res)
    assert "loses several points" in line and "4-bit met, 3-bit NOT met" in line


@pytest.mark.slow
def test_whole_benchmark_on_small_models(tmp_path, capsys):
    assert bench.main(["--model", "digits_cnn", "--bits", "4,2", "--grid", "digits_cnn", "--large", "300k",
                       "--no-peers", "--out", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "grid on digits_cnn" in text and "peak extra memory" in text
