"""report.html in a real browser: headless Chromium loads it, every image loads, the console is clean.

Skipped, with the reason, only when Debian's ``chromium`` package is not installed (``.ci/run``
installs it when missing). ``QSWEEP_SCREENSHOT_DIR=DIR`` keeps the screenshots (``report-<run>.png``)
to look at.
"""
from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from harness.report import write_report
from tests.analysis.chromium import chromium, open_page

pytest.importorskip("websocket", reason="needs websocket-client (part of the dev extra)")

#: What the test reads from the loaded page.
SCRIPT = """(() => {
  const imgs = Array.from(document.images).map(i => ({alt: i.alt, complete: i.complete, w: i.naturalWidth,
                                                       h: i.naturalHeight, shown: i.getBoundingClientRect().width}));
  return {title: document.title, text: document.body.innerText, height: document.body.scrollHeight, images: imgs,
          headings: Array.from(document.querySelectorAll('h2')).map(h => h.textContent),
          rows: document.querySelectorAll('table.tbl tbody tr').length};
})()"""


@pytest.fixture(scope="module")
def browser() -> str:
    exe = chromium()
    if exe is None:
        pytest.skip("Debian's chromium package is not installed (apt-get install chromium; .ci/run installs it)")
    return exe


def _open(run_dir: Path, exe: str, name: str):
    write_report(run_dir)
    page = open_page((run_dir / "report.html").resolve().as_uri(), SCRIPT, exe=exe)
    keep = os.environ.get("QSWEEP_SCREENSHOT_DIR")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        (Path(keep) / f"report-{name}.png").write_bytes(page.screenshot)
    return page


def _not_blank(png: bytes) -> None:
    from matplotlib.image import imread

    pixels = imread(io.BytesIO(png), format="png")
    assert pixels.shape[0] >= 900 and pixels.shape[1] >= 1000
    assert float(np.std(pixels[..., :3])) > 0.05  # not one colour
    assert float((pixels[..., :3].min(axis=-1) < 0.5).mean()) > 0.01  # there is ink on the page


def _check(page, n_images: int) -> dict:
    assert page.errors == []
    r = page.result
    assert len(r["images"]) == n_images
    for img in r["images"]:
        assert img["complete"] and img["w"] > 100 and img["h"] > 100 and img["shown"] > 100, img
    _not_blank(page.screenshot)
    return r


def test_grid_report_in_chromium(grid_dir: Path, browser: str, tmp_path: Path):
    run_dir = Path(shutil.copytree(grid_dir, tmp_path / "run"))
    r = _check(_open(run_dir, browser, "grid"), n_images=2)
    assert r["title"].startswith("qsweep report: digits_mlp")
    for h in ("Best within the target", "Size vs accuracy", "Pareto front", "Per-layer encodings", "All trials"):
        assert any(x.startswith(h) for x in r["headings"]), (h, r["headings"])
    assert r["rows"] >= 2
    assert "reused the result of an identical plan" in r["text"]


def test_mixed_report_in_chromium(mixed_dir: Path, browser: str, tmp_path: Path):
    run_dir = Path(shutil.copytree(mixed_dir, tmp_path / "run"))
    _check(_open(run_dir, browser, "mixed"), n_images=2)


def test_sensitivity_report_in_chromium(sensitivity_dir: Path, browser: str, tmp_path: Path):
    run_dir = Path(shutil.copytree(sensitivity_dir, tmp_path / "run"))
    _check(_open(run_dir, browser, "sensitivity"), n_images=1)
