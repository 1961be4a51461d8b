"""The statistics of one run: layer name -> LayerStats, kept in memory up to a budget and file-backed beyond it.

:class:`CalibrationStats` is what :func:`harness.calibration.collect_stats`
returns and what :func:`quantizer.build_plan` / :func:`quantizer.quantize_weights`
take as ``calibration``: a read-only mapping from layer name to
:class:`quantizer.algorithms.LayerStats`. Statistics that would take more than
the in-memory budget are saved to a private temporary folder and reopened
file-backed (``H`` memory-mapped only while an algorithm reads it), so a sweep
keeps the statistics of every layer for the whole run in bounded memory.
:meth:`CalibrationStats.close` (or the end of the process) removes the folder.

Example:
    >>> import numpy as np
    >>> from quantizer.algorithms import LayerStats
    >>> cs = CalibrationStats({"fc": LayerStats(np.eye(2), np.zeros(2), 4)}, samples=4, seconds=0.1)
    >>> sorted(cs), cs.samples, cs.record()["layers"]["fc"]["rows"]
    (['fc'], 4, 4)
"""
from __future__ import annotations

import atexit
import hashlib
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator, Mapping

from quantizer.algorithms import LayerStats

__all__ = ["CalibrationStats", "DEFAULT_MEMORY_BYTES"]

#: Default bytes of statistics kept in memory (the rest is file-backed): 256 MiB.
DEFAULT_MEMORY_BYTES = 256 << 20


class CalibrationStats(Mapping):
    """Layer name -> :class:`~quantizer.algorithms.LayerStats` of one model's calibration inputs.

    Attributes:
        samples: calibration samples the statistics were collected from.
        seconds: wall time spent collecting them.
        skipped: layers with weights that got no statistics, and why (e.g. inside a loop body).
        source: ``"float"`` (the float model's activations) or ``"sequential"``.
    """

    def __init__(self, stats: Mapping[str, LayerStats], *, samples: int, seconds: float,
                 skipped: Mapping[str, str] | None = None, source: str = "float",
                 folder: Path | None = None) -> None:
        self._stats = dict(stats)
        self.samples = int(samples)
        self.seconds = float(seconds)
        self.skipped = dict(skipped or {})
        self.source = source
        self._folder = folder
        self._digest: str | None = None

    # -- mapping ----------------------------------------------------------------------------
    def __getitem__(self, name: str) -> LayerStats:
        return self._stats[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._stats)

    def __len__(self) -> int:
        return len(self._stats)

    def __repr__(self) -> str:
        return (f"CalibrationStats({len(self)} layers, {self.samples} samples, {self.nbytes / 2**20:.1f} MiB, "
                f"{self.resident_bytes / 2**20:.1f} MiB in memory, {self.source})")

    # -- what it holds ------------------------------------------------------------------------
    @property
    def nbytes(self) -> int:
        """Bytes of every layer's ``H`` and mean (in memory or on disk)."""
        return sum(s.nbytes for s in self._stats.values())

    @property
    def resident_bytes(self) -> int:
        """Bytes of the statistics held in memory (file-backed ``H`` not counted)."""
        return sum(s.nbytes if not s.file_backed else s.mean.nbytes for s in self._stats.values())

    def digest(self) -> str:
        """sha256 over the layer names and their statistics' digests."""
        if self._digest is None:
            h = hashlib.sha256(b"qsweep.CalibrationStats\n")
            for name in sorted(self._stats):
                h.update(f"{name}\t{self._stats[name].digest()}\n".encode())
            self._digest = h.hexdigest()
        return self._digest

    def record(self) -> dict[str, Any]:
        """JSON-able description: samples, seconds, source, digest, and per layer rows, groups,
        columns, H block (None = full), bytes and whether it is file-backed."""
        return {
            "samples": self.samples, "seconds": round(self.seconds, 3), "source": self.source,
            "digest": self.digest(), "bytes": self.nbytes, "resident_bytes": self.resident_bytes,
            "layers": {name: {"rows": s.rows, "groups": s.groups, "columns": s.columns, "block": s.block,
                              "bytes": s.nbytes, "file_backed": s.file_backed}
                       for name, s in self._stats.items()},
            "skipped": dict(self.skipped),
        }

    # -- lifetime ---------------------------------------------------------------------------
    def close(self) -> None:
        """Remove the folder of file-backed statistics (they cannot be read afterwards)."""
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None


class _Spill:
    """Keeps statistics in memory until ``budget`` bytes, then saves each further one to a
    temporary folder and hands back the file-backed copy."""

    def __init__(self, budget: int, folder: str | Path | None = None) -> None:
        self.budget = int(budget)
        self.parent = folder
        self.folder: Path | None = None
        self.resident = 0

    def keep(self, name: str, stats: LayerStats, index: int) -> LayerStats:
        if self.resident + stats.nbytes <= self.budget:
            self.resident += stats.nbytes
            return stats
        if self.folder is None:
            self.folder = Path(tempfile.mkdtemp(prefix="qsweep-stats-", dir=self.parent))
            atexit.register(shutil.rmtree, self.folder, True)
        path = stats.save(self.folder / f"layer{index:04d}")
        return LayerStats.open(path)
