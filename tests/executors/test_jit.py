"""The executor's compiled loops (harness.executors.ops._jit): exp's accuracy and range, softmax's edge rows.

The kernels' results against float64 references are in test_executor_parallel.py;
these are the properties the compiled code adds.
"""
from __future__ import annotations

import numpy as np
import pytest
from numba import njit

from harness.executors.ops import _jit as J
from harness.executors.ops import _kernels as K

F32 = np.float32


@njit(fastmath=J._MAP, error_model="numpy")
def _exp_all(x, y):
    for i in range(x.size):
        y[i] = J.expf(x[i])


def expf(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, F32)
    y = np.empty_like(x)
    _exp_all(x, y)
    return y


def test_expf_relative_error_within_two_ulp_over_its_range():
    x = np.linspace(-87.3, 88.37, 3_000_001).astype(F32)
    ref = np.exp(x.astype(np.float64))
    rel = np.abs(expf(x) - ref) / ref
    assert rel.max() <= 1.2e-7  # 2 float32 ulp (2^-23 = 1.19e-7); measured 8.8e-8


def test_expf_underflow_overflow_and_nan():
    y = expf(np.array([-np.inf, -1e30, -88.0, -87.34, 88.38, 1e30, np.inf, np.nan], F32))
    assert (y[:4] == 0).all()
    assert np.isposinf(y[4:7]).all()
    assert np.isnan(y[7])


def test_softmax_masked_entries_are_exactly_zero_and_an_all_masked_row_is_nan():
    x = np.random.default_rng(3).normal(size=(5, 40)).astype(F32)
    x[1, :30] = -np.inf  # an attention mask written as -inf
    x[2, 5:] = -1e4  # ... or as a large negative number
    x[3] = -np.inf  # nothing to attend to: 0 / 0, as in the per-row formula
    with np.errstate(invalid="ignore"):
        y = K.softmax_last(x)
    assert (y[1, :30] == 0).all() and (y[2, 5:] == 0).all()
    np.testing.assert_allclose(y[[0, 1, 2, 4]].sum(axis=1), 1.0, rtol=1e-6)
    assert np.isnan(y[3]).all()


def test_without_a_writable_cache_directory_the_kernels_are_compiled_per_process(monkeypatch):
    from numba.core import caching

    class Nowhere:
        @classmethod
        def from_function(cls, py_func, py_file):
            return None  # what numba's locators return when they cannot write
    monkeypatch.setattr(caching.CacheImpl, "_locator_classes", [Nowhere])
    assert J._cacheable() is False


@pytest.mark.parametrize("mode", ["EXACT", "TANH_APPROXIMATION", "SIGMOID_APPROXIMATION"])
def test_gelu_of_huge_inputs_is_x_or_zero(mode):
    x = np.array([-1e30, -200.0, 200.0, 1e30], F32)
    with np.errstate(over="ignore"):
        y = K.gelu(x, mode)
    np.testing.assert_array_equal(y, np.array([0, 0, 200, 1e30], F32))


@njit(fastmath=J._MAP, error_model="numpy")
def _exp2_tanh_all(x, e, t):
    for i in range(x.size):
        e[i] = J.exp2f(x[i])
        t[i] = J.tanhf(x[i])


def test_exp2f_and_tanhf_accuracy_and_range():
    x = np.linspace(-125.9, 127.4, 2_000_001).astype(F32)
    e, t = np.empty_like(x), np.empty_like(x)
    _exp2_tanh_all(x, e, t)
    ref = np.exp2(x.astype(np.float64))
    assert (np.abs(e - ref) / ref).max() <= 1.2e-7
    assert np.abs(t - np.tanh(x.astype(np.float64))).max() <= 2e-7
    edge = np.array([-np.inf, -127.0, 127.5, np.inf, np.nan, 0.0, -0.0], F32)
    e, t = np.empty_like(edge), np.empty_like(edge)
    _exp2_tanh_all(edge, e, t)
    assert (e[:2] == 0).all() and np.isposinf(e[2:4]).all() and np.isnan(e[4]) and (e[5:] == 1).all()
    np.testing.assert_array_equal(t[[0, 1, 2, 3, 5]], [-1, -1, 1, 1, 0])
    assert np.isnan(t[4])


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("grain", [1, 7, 1000, 5000])
def test_compiled_chunk_drivers_cover_every_element_once(threads, grain):
    """for_compiled: the threads share one atomic chunk counter; every chunk is computed exactly once,
    and the result is bit-identical to one call over the whole array (row kernels: whole rows)."""
    from harness.executors.ops import _parallel as par

    rng = np.random.default_rng(3)
    x = rng.standard_normal(4999, dtype=F32)
    whole = np.empty_like(x)
    J.gelu_sigmoid(x, whole, F32(1.702))
    y = np.full_like(x, np.nan)
    par.for_compiled(J.gelu_sigmoid_chunks, x.size, grain, x, y, F32(1.702), n_threads=threads)
    assert np.array_equal(y, whole)

    rows = rng.standard_normal((301, 33), dtype=F32)
    whole = np.empty_like(rows)
    J.softmax_rows(rows, whole)
    y = np.full_like(rows, np.nan)
    par.for_compiled(J.softmax_chunks, rows.shape[0], max(1, grain // 33), rows, y, n_threads=threads)
    assert np.array_equal(y, whole)


@pytest.mark.parametrize("d", [1, 2, 8, J.SHORT_SOFTMAX, J.SHORT_SOFTMAX + 1, J.SHORT_NORMALIZE, J.SHORT_NORMALIZE + 1])
@pytest.mark.parametrize("n", [1, J.SHORT_BLOCK - 1, J.SHORT_BLOCK + 1, 3 * J.SHORT_BLOCK])
def test_short_row_kernels_equal_the_row_kernels_and_float64(d, n):
    """Rows up to SHORT_SOFTMAX / SHORT_NORMALIZE go by columns, a block of rows at a time: the same
    figures as the per-row kernels (float32 rounding apart) and float64, in full and partial blocks."""
    rng = np.random.default_rng(d * 1000 + n)
    x = (rng.normal(2.0, 3.0, size=(n, d))).astype(F32)
    g, b = rng.normal(size=d).astype(F32), rng.normal(size=d).astype(F32)
    x64 = x.astype(np.float64)
    e = np.exp(x64 - x64.max(axis=1, keepdims=True))
    soft64 = e / e.sum(axis=1, keepdims=True)
    c = x64 - x64.mean(axis=1, keepdims=True)
    norm64 = c / np.sqrt((c * c).mean(axis=1, keepdims=True) + 1e-5) * g + b
    short, rows = np.full_like(x, np.nan), np.full_like(x, np.nan)
    J.softmax_short_rows(x, short)
    J.softmax_rows(x, rows)
    np.testing.assert_allclose(short, soft64, rtol=2e-6, atol=1e-7)
    np.testing.assert_allclose(short, rows, rtol=2e-6, atol=1e-7)
    for variance, ref in ((True, norm64), (False, c * g + b)):
        J.normalize_short_rows(x, F32(1e-5), variance, g, b, short)
        J.normalize_rows(x, F32(1e-5), variance, g, b, rows)
        np.testing.assert_allclose(short, ref, rtol=1e-5, atol=2e-5)
        np.testing.assert_allclose(short, rows, rtol=1e-5, atol=2e-5)


def test_short_softmax_non_finite_and_masked_rows_as_the_row_kernel():
    x = np.random.default_rng(5).normal(size=(70, 8)).astype(F32)
    x[3, 2] = np.inf
    x[4, 0] = np.nan
    x[5] = -np.inf  # all masked: 0 / 0
    x[6, :7] = -np.inf  # one key left: exactly 1
    short, rows = np.empty_like(x), np.empty_like(x)
    J.softmax_short_rows(x, short)
    J.softmax_rows(x, rows)
    np.testing.assert_array_equal(np.isnan(short), np.isnan(rows))
    assert np.isnan(short[[3, 4, 5]]).all() and not np.isnan(short[np.r_[0:3, 6:70]]).any()
    assert (short[6, :7] == 0).all() and short[6, 7] == 1
    np.testing.assert_allclose(short[7:], rows[7:], rtol=2e-6, atol=1e-7)
