"""Calibration statistics for calibration-aware quantization: collected once per run, from samples that are never the test set.

* :func:`collect_stats` -- the numpy executor over calibration inputs with an
  observer that accumulates, per weight layer, the input Gram matrix ``H`` and
  mean input (:mod:`harness.calibration.collect`).
* :class:`CalibrationStats` -- layer name -> :class:`quantizer.algorithms.LayerStats`,
  in bounded memory (:mod:`harness.calibration.store`); pass it to
  :func:`quantizer.quantize_weights` / :func:`quantizer.build_plan` as ``calibration``.
* :func:`sequential_stats` -- the GPTQ paper's alternative (each layer's
  statistics from the model whose earlier layers are already quantized),
  kept to measure the choice (:mod:`harness.calibration.sequential`).

The calibration *data* (``calibration`` config group: npz/csv files or a
split of the given data, checked against the test set) is loaded by
:mod:`harness.data.calibration`.

Example:
    >>> import quantizer
    >>> from harness import zoo
    >>> from harness.calibration import collect_stats
    >>> spec, _ = zoo.load("digits_mlp")
    >>> train = zoo.load_data("digits_mlp", spec, part="train")
    >>> stats = collect_stats(spec, {k: v[:128] for k, v in train.feeds.items()})
    >>> q = quantizer.quantize_weights(spec, 4, "linear", algorithm="gptq", calibration=stats)
    >>> sorted(stats), stats.samples
    (['dense1', 'dense2', 'dense3'], 128)
"""
from harness.calibration.collect import collect_stats, stats_layers
from harness.calibration.sequential import sequential_stats
from harness.calibration.store import CalibrationStats

__all__ = ["collect_stats", "stats_layers", "sequential_stats", "CalibrationStats"]
