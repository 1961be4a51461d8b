"""Measure a (quantized) model on the test set against the float model.

:class:`Evaluator` runs the float model once (its outputs are cached for the
whole run: the baseline row of every report), binds the task metric to the
model (:func:`harness.metric_choice.choose_metric`: the scored output, its
kind, the auto metric, refusals of metrics that cannot tell models apart) and
then, per candidate, computes the task metric with its 95% interval and the
p-value of its drop (:mod:`harness.scores`), the agreement of the predictions
with the float model's, and the output SNR / PSNR in dB of every numeric output
as coremltools' ``compare_models`` defines them (``snr_db`` is the worst
output). Sizes are the serialized bytes (:func:`quantizer.model_size`).

A candidate runs on the test set chunk by chunk, in the fixed seeded order of
:class:`harness.racing.SampleOrder` (every mode, ``racing=off`` included, so the
figures never depend on the mode); :meth:`Evaluator.measure` asks a stop rule
after each chunk (racing) and, when it stops, returns the figures of the
samples seen. A finished candidate's figures are computed on its outputs put
back in test-set order, exactly as on one big batch. Chunks start at the
candidate's first changed layer when the float model's activations there are
cached (:mod:`harness.activations`).

Example:
    >>> from harness import zoo
    >>> spec, test = zoo.load("digits_mlp")                          # doctest: +SKIP
    >>> ev = Evaluator(spec, test, executor="numpy")                 # doctest: +SKIP
    >>> ev.baseline["accuracy"], ev.metric.name                      # doctest: +SKIP
    (0.96, 'accuracy')
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np

from harness import rundir, shutdown, stats
from harness.activations import ActivationCache
from harness.config import EvaluationConfig, evaluation_options
from harness.errors import ConfigError, DataError, ExecutorError
from harness.metric_choice import CLASSIFYING, MetricRequest, choose_metric, classifies, numeric_outputs
from harness.racing import Bounds, SampleOrder, Stop, chunk_size, difficulty_strata
from harness.scores import REFERENCE_METRICS, Score, SampleMetric, TaskMetric

__all__ = ["Evaluator", "TaskMetric", "Measured"]


@dataclass
class Measured:
    """What :meth:`Evaluator.measure` found: the figures, the samples evaluated, and why it stopped
    (None: it saw every sample)."""

    figures: dict[str, Any]
    seen: int
    stop: Stop | None = None

log = logging.getLogger("qsweep")


class Evaluator:
    """Evaluate models on one test set; the float model's outputs are computed once.

    Args:
        spec: the float model (``Model_pb2.Model``).
        dataset: a :class:`harness.data.Dataset` fitted to the model.
        executor: ``numpy``, ``coreml`` or ``auto`` (see :func:`harness.executors.make_executor`).
        metric: the ``metric`` config node, a :class:`~harness.metric_choice.MetricRequest`, or a metric name.
        batch_size: samples per ``predict`` call.
        seed: the seed of the bootstrap resamples and of the sample order (the run's ``seed``).
        evaluation: the ``evaluation`` config node (racing, chunks, activation cache); None: the defaults.

    Raises:
        ConfigError / DataError: a metric the model and data cannot give (before any trial).
    """

    def __init__(self, spec: Any, dataset: Any, *, executor: str = "numpy", metric: Any = "auto",
                 batch_size: int = 512, seed: int = 0, evaluation: Any = None):
        import quantizer
        from harness.data import task_of

        if batch_size < 1:
            raise ConfigError(f"executor.batch_size must be at least 1, got {batch_size}.")
        self.request = metric if isinstance(metric, MetricRequest) else MetricRequest.from_config(metric)
        self.dataset = dataset
        self.executor_kind = executor
        self.batch_size = int(batch_size)
        self.labels = dataset.labels
        self.float_size = quantizer.model_size(spec)
        self.float_outputs = self.predict(spec)
        self.metric: TaskMetric = choose_metric(self.request, spec, self.float_outputs, self.labels)
        self.snr_outputs = numeric_outputs(self.float_outputs)
        self.boot = stats.Bootstrap(self.request.bootstrap, seed)
        self._agreement = classifies(self.metric, task_of(spec))
        self.reference: Score = self.metric.score(self.float_outputs, self.labels, self.float_outputs,
                                                  boot=self.boot)
        lo, hi = self.ci_names
        exact = self.metric.name in REFERENCE_METRICS  # the float model against itself: no sampling
        self.baseline: dict[str, Any] = {
            "size_bytes": self.float_size,
            "compression_ratio": 1.0,
            self.metric.name: self.reference.value,
            lo: self.reference.value if exact else self.reference.ci_low,
            hi: self.reference.value if exact else self.reference.ci_high,
            self.metric.drop_name: 0.0,
            rundir.drop_p_column(self.metric.name): 1.0 if self.metric.drop_test else None,
            "agreement": 1.0 if self._agreement else None,
        }
        self.options: EvaluationConfig = evaluation_options(evaluation) if evaluation is not None \
            else EvaluationConfig()
        self._setup_chunks(spec, seed)
        log.info("metric: %s on %s; 95%% interval: %s", self.metric.name,
                 f"output {self.metric.head.describe(self.metric.name in CLASSIFYING)}, "
                 f"chosen as {self.metric.head.chosen}"
                 if self.metric.output is not None else "every numeric output (the worst)", self.interval_description)

    # -- what is measured ----------------------------------------------------------------
    @property
    def ci_names(self) -> tuple[str, str]:
        return rundir.ci_columns(self.metric.name)

    @property
    def figure_keys(self) -> list[str]:
        """Every figure :meth:`evaluate` returns (the trial attributes a reused trial copies)."""
        return rundir.figure_columns(self.metric.name, self.snr_outputs)

    @property
    def interval_description(self) -> str:
        if isinstance(self.metric, SampleMetric) and self.metric.proportion:
            return "Wilson score"
        return f"percentile bootstrap, {self.boot.resamples} resamples, seed {self.boot.seed}"

    def record(self) -> dict[str, Any]:
        """What the trials measure, for the study's experiment record (resuming with another metric is refused)."""
        m = self.metric
        return {"name": m.name, "output": m.output, "kind": m.head.kind, "maximize": m.maximize,
                "threshold": m.head.threshold if m.head.kind == "binary" else None,
                "fn": getattr(m, "path", None),
                "bootstrap": None if self.metric_is_proportion else self.boot.resamples}

    def racing_record(self) -> dict[str, Any]:
        """What decides which trials racing stops, for the study's experiment record (and summary.json):
        the mode, its confidence, the chunk and the order's strata."""
        o, order = self.options, self.order.describe()
        return {"mode": o.racing.value, "confidence": o.confidence if o.racing.value == "confident" else None,
                **{k: order[k] for k in ("chunk", "first_look", "strata")}, "stops": self.bounds.stops}

    @property
    def metric_is_proportion(self) -> bool:
        return isinstance(self.metric, SampleMetric) and self.metric.proportion

    def evaluation_entry(self) -> rundir.EvaluationEntry:
        """``summary["evaluation"]``."""
        m = self.metric
        return {
            "metric": m.name, "output": m.output, "output_kind": m.head.kind if m.output else "every numeric output",
            "output_reason": m.head.why if m.output else "snr_db / psnr_db: the worst numeric output",
            "output_default": self.request.output is None, "output_choice": m.head.chosen if m.output else None,
            "threshold": m.head.threshold if m.head.kind == "binary" and m.output else None,
            "fn": getattr(m, "path", None), "labels": self.labels is not None, "n": int(self.dataset.n),
            "confidence": stats.CONFIDENCE, "interval": "wilson" if self.metric_is_proportion else "bootstrap",
            "bootstrap_resamples": None if self.metric_is_proportion else self.boot.resamples,
            "drop_test": m.drop_test, "snr_outputs": list(self.snr_outputs),
        }

    # -- chunks ----------------------------------------------------------------------------
    def _setup_chunks(self, spec: Any, seed: int) -> None:
        """The sample order, the stop bounds, each chunk's feeds / labels / float outputs, the activation cache."""
        import quantizer

        o = self.options
        n = self.dataset.n
        strata = difficulty_strata(self.metric, self.reference.rows, self.float_outputs)
        self.order = SampleOrder.build(strata, seed, chunk_size(n, o.chunk))
        self.bounds = Bounds(self.metric, self.order, self.labels, o.racing, o.confidence)
        self._chunks = self.order.chunks()
        feeds = self.dataset.feeds
        self._chunk_feeds = [{k: v[idx] for k, v in feeds.items()} for idx in self._chunks]
        #: Samples run through a candidate's network by :meth:`measure` (every chunk of every candidate).
        self.sample_evaluations = 0
        self.cache = ActivationCache(o.activation_cache_mb, o.activation_spill_mb)
        if self.cache.enabled:
            self.cache.add_reference(self._float_executor)
            fused = quantizer.fuse(spec)
            if fused.SerializeToString() != spec.SerializeToString():
                self.cache.add_reference(self.executor_for(fused))
        self._float_executor = None

    def _run_chunk(self, ex: Any, prefix: Any, j: int) -> dict[str, np.ndarray]:
        """``ex``'s outputs on chunk ``j`` (in batches of ``batch_size``; from the activation cache if it can)."""
        feeds = self._chunk_feeds[j]
        n = len(self._chunks[j])
        parts: dict[str, list[np.ndarray]] = {}
        for b, start in enumerate(range(0, n, self.batch_size)):
            shutdown.check()  # a stop signal Python swallowed in a finalizer
            batch = {k: v[start:start + self.batch_size] for k, v in feeds.items()}
            if prefix is not None:
                out = self.cache.run(ex, prefix, (j, b), batch)
            else:
                out = ex.predict(batch)
            for k, v in out.items():
                parts.setdefault(k, []).append(np.asarray(v))
        return {k: v[0] if len(v) == 1 else np.concatenate(v, axis=0) for k, v in parts.items()}

    def _rows(self, outputs: Mapping[str, np.ndarray], idx: np.ndarray) -> np.ndarray:
        """Per-sample rows of the task metric on samples ``idx`` (their outputs)."""
        labels = None if self.labels is None else self.labels[idx]
        float_outputs = {k: v[idx] for k, v in self.float_outputs.items()}
        return self.metric.per_sample(outputs, labels, float_outputs)

    def measure(self, spec: Any, check: Callable[[float | None, int], Stop | None] | None = None, *,
                data: bytes | None = None) -> Measured:
        """Run ``spec`` chunk by chunk; after each chunk but the last, ``check(reach, seen)`` may stop it
        (``reach``: :meth:`harness.racing.Bounds.reach` of the samples seen). A stopped candidate's
        figures are those of the samples it saw (:meth:`partial_figures`). ``data``: its model file bytes
        (:func:`harness.outputs.model_file`) when the caller has them: the size is their length and the
        executor is parsed from them (a large model is not serialized again)."""
        size = None if data is None else len(data)
        ex = self.executor_for(spec if data is None else data)
        prefix = self.cache.prefix(ex)
        racing = check is not None and self.bounds.stops
        chunks: list[dict[str, np.ndarray]] = []
        rows: list[np.ndarray] = []
        seen = 0
        for j, idx in enumerate(self._chunks):
            out = self._run_chunk(ex, prefix, j)
            chunks.append(out)
            seen += len(idx)
            self.sample_evaluations += len(idx)
            if racing and j < len(self._chunks) - 1:
                rows.append(self._rows(out, idx))
                stop = check(self.bounds.reach(np.concatenate(rows, axis=0)), seen)
                if stop is not None:
                    idx_seen = self.order.order[:seen]
                    joined = {k: np.concatenate([c[k] for c in chunks], axis=0) for k in chunks[0]}
                    return Measured(self.partial_figures(spec, joined, idx_seen, size=size), seen, stop)
        outputs = {}
        for k in chunks[0]:
            first = chunks[0][k]
            full = np.empty((self.dataset.n,) + first.shape[1:], dtype=first.dtype)
            for idx, c in zip(self._chunks, chunks):
                full[idx] = c[k]
            outputs[k] = full
        return Measured(self.figures(spec, outputs, size=size), seen)

    # -- running -------------------------------------------------------------------------
    def executor_for(self, spec: Any) -> Any:
        """Build the executor for ``spec`` (a spec or a model file's bytes; compiles and checks every layer)."""
        from harness.executors import make_executor

        return make_executor(self.executor_kind, spec)

    def predict(self, spec: Any) -> dict[str, np.ndarray]:
        """Every output of ``spec`` on the whole test set in test-set order (in batches)."""
        ex = self.executor_for(spec)
        self.executor_name = type(ex).__name__
        self._float_executor = ex
        feeds = self.dataset.feeds
        n = next(iter(feeds.values())).shape[0]
        parts: dict[str, list[np.ndarray]] = {}
        for start in range(0, n, self.batch_size):
            batch = {k: v[start:start + self.batch_size] for k, v in feeds.items()}
            for k, v in ex.predict(batch).items():
                parts.setdefault(k, []).append(np.asarray(v))
        return {k: np.concatenate(v, axis=0) for k, v in parts.items()}

    def _snr(self, outputs: Mapping[str, np.ndarray], float_outputs: Mapping[str, np.ndarray]) -> dict[str, float]:
        """Mean per-sample SNR of each numeric output (``snr_db:<output>``) and the worst SNR and PSNR."""
        from harness import metrics

        out: dict[str, float] = {}
        snrs, psnrs = [], []
        for k in self.snr_outputs:
            st = metrics.noise_stats(float_outputs[k], outputs[k])
            out[rundir.snr_column(k)] = st.snr_mean
            snrs.append(st.snr_mean)
            psnrs.append(st.psnr_mean)
        out["snr_db"] = min(snrs) if snrs else float("nan")
        out["psnr_db"] = min(psnrs) if psnrs else float("nan")
        return out

    def evaluate(self, spec: Any) -> dict[str, Any]:
        """All figures of ``spec`` against the float model on every sample (:attr:`figure_keys`)."""
        return self.measure(spec).figures

    def figures(self, spec: Any, outputs: Mapping[str, np.ndarray], *, size: int | None = None) -> dict[str, Any]:
        """All figures of ``spec`` from its outputs on the whole test set, in test-set order."""
        return self._figures(spec, outputs, self.labels, self.float_outputs, self.reference, size)

    def partial_figures(self, spec: Any, outputs: Mapping[str, np.ndarray], idx: np.ndarray, *,
                        size: int | None = None) -> dict[str, Any]:
        """The figures of the samples ``idx`` only (a stopped candidate): interval, drop and its p-value
        against the float model on those same samples."""
        labels = None if self.labels is None else self.labels[idx]
        float_outputs = {k: v[idx] for k, v in self.float_outputs.items()}
        ref = self.metric.score(float_outputs, labels, float_outputs, boot=self.boot)
        return self._figures(spec, outputs, labels, float_outputs, ref, size)

    def _figures(self, spec: Any, outputs: Mapping[str, np.ndarray], labels: Any,
                 float_outputs: Mapping[str, np.ndarray], reference: Score, size: int | None = None) -> dict[str, Any]:
        import quantizer

        missing = [k for k in float_outputs if k not in outputs]
        if missing:
            raise DataError(f"The quantized model lacks output(s) {missing} of the float model.")
        m = self.metric
        score = m.score(outputs, labels, float_outputs, boot=self.boot, reference=reference)
        if not np.isfinite(score.value):
            raise ExecutorError(f"{m.name} of this model is not a number: {_non_finite(outputs)}; the quantized "
                                "weights break the network (recorded as a failed trial).")
        if size is None:
            size = quantizer.model_size(spec)
        lo, hi = self.ci_names
        agreement = None
        if self._agreement:
            agreement = float(np.mean(m.head.predictions(outputs) == m.head.predictions(float_outputs)))
        figures = {
            "size_bytes": int(size),
            "compression_ratio": self.float_size / size,
            "agreement": agreement,
            **self._snr(outputs, float_outputs),
            m.name: score.value,
            lo: score.ci_low,
            hi: score.ci_high,
            m.drop_name: m.drop(reference.value, score.value),
            rundir.drop_p_column(m.name): score.drop_p,
        }
        return {k: figures[k] for k in self.figure_keys}


def _non_finite(outputs: Mapping[str, np.ndarray]) -> str:
    """``output 'embedding' is NaN or infinite on 480 of 480 samples`` (every such numeric output)."""
    parts = []
    for name, arr in outputs.items():
        a = np.asarray(arr)
        if a.dtype.kind != "f" or a.ndim == 0:
            continue
        bad = int(np.sum(~np.isfinite(a.reshape(len(a), -1)).all(axis=1)))
        if bad:
            parts.append(f"output {name!r} is NaN or infinite on {bad} of {len(a)} samples")
    return "; ".join(parts) or "its outputs are finite, but the metric function returned NaN"
