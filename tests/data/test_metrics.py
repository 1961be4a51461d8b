"""harness.metrics: hand-computed values, coremltools' SNR definition, scikit-learn parity, errors."""
from __future__ import annotations

import math

import numpy as np
import pytest

from harness import metrics as M
from harness.errors import DataError

SCORES = np.array([[0.1, 0.7, 0.2],
                   [0.5, 0.3, 0.2],
                   [0.2, 0.2, 0.6],
                   [0.4, 0.4, 0.2]])
LABELS = np.array([1, 2, 2, 1])  # predictions (argmax, ties -> lower column): 1, 0, 2, 0


def test_top1_from_scores_and_from_labels():
    assert M.top1_accuracy(SCORES, LABELS) == 0.5
    assert M.top1_accuracy(np.array([1, 0, 2, 0]), LABELS) == 0.5
    assert M.top1_accuracy(np.array(["a", "b", "c"]), np.array(["a", "b", "x"])) == pytest.approx(2 / 3)


def test_top1_with_class_labels():
    classes = np.array(["cat", "dog", "eel"])
    assert M.top1_accuracy(SCORES, np.array(["dog", "eel", "eel", "cat"]), class_labels=classes) == 0.75
    int_classes = np.array([3, 5, 7])
    assert M.top1_accuracy(SCORES, np.array([5, 7, 7, 5]), class_labels=int_classes) == 0.5


def test_topk_hand_computed():
    # top-2 per row: {1,2} {0,1} {2,0} {0,1} -> hits: yes, no, yes, yes
    assert M.topk_accuracy(SCORES, LABELS, k=2) == 0.75
    assert M.topk_accuracy(SCORES, LABELS, k=1) == M.top1_accuracy(SCORES, LABELS)
    assert M.topk_accuracy(SCORES, LABELS, k=3) == 1.0
    np.testing.assert_array_equal(M.topk_indices(SCORES, 2), [[1, 2], [0, 1], [2, 0], [0, 1]])


def test_topk_with_class_labels_and_logits():
    logits = np.log(SCORES)  # same order, so the same figures
    classes = np.array([10, 20, 30])
    assert M.topk_accuracy(logits, np.array([20, 30, 30, 20]), k=2, class_labels=classes) == 0.75


def test_agreement():
    assert M.agreement(np.array([0, 1, 2, 3]), np.array([0, 1, 1, 3])) == 0.75
    other = SCORES.copy()
    other[1] = [0.1, 0.1, 0.8]  # argmax 0 -> 2
    assert M.agreement(SCORES, other) == 0.75
    assert M.agreement(SCORES, SCORES) == 1.0


def test_topk_agreement_matches_coremltools_definition():
    other = np.array([[0.7, 0.2, 0.1],   # ref top 1; other top-2 {0,1}: yes
                      [0.1, 0.1, 0.8],   # ref top 0; other top-2 {2,0}: yes (tie -> lower index)
                      [0.6, 0.3, 0.1],   # ref top 2; other top-2 {0,1}: no
                      [0.1, 0.2, 0.7]])  # ref top 0; other top-2 {2,1}: no
    assert M.topk_agreement(SCORES, other, k=2) == 0.5
    assert M.topk_agreement(SCORES, other, k=5) == 1.0  # capped at K = 3 as coremltools does


def test_snr_psnr_hand_computed():
    ref = np.array([[2.0, 1.0], [3.0, 4.0]])
    q = np.array([[2.0, 0.0], [3.0, 3.0]])
    nv = 0.5 + 1e-7                       # both samples: noise (0, 1)
    snr = [10 * math.log10(2.0 / nv), 10 * math.log10(9.0 / nv)]   # signal energy of q: 4/2, 18/2
    psnr = [10 * math.log10(4.0 / nv), 10 * math.log10(9.0 / nv)]  # peak of q**2: 4, 9
    st = M.noise_stats(ref, q)
    np.testing.assert_allclose(st.snr, snr, rtol=1e-12)
    np.testing.assert_allclose(st.psnr, psnr, rtol=1e-12)
    assert M.snr_db(ref, q) == pytest.approx(np.mean(snr), rel=1e-12)
    assert M.psnr_db(ref, q) == pytest.approx(np.mean(psnr), rel=1e-12)
    assert st.snr_var == pytest.approx(np.var(snr), rel=1e-12)


def test_snr_equals_coremltools_compute_snr():
    from quantizer.coremltools_quiet import coremltools

    ct = coremltools()
    from coremltools.models.neural_network.quantization_utils import NoiseMetrics

    rng = np.random.default_rng(0)
    ref = rng.normal(size=(6, 3, 4))
    q = ref + rng.normal(scale=0.05, size=ref.shape)
    expected = [NoiseMetrics._compute_snr(ref[i].flatten(), q[i].flatten()) for i in range(6)]
    st = M.noise_stats(ref, q)
    np.testing.assert_allclose(st.snr, [e[0] for e in expected], rtol=1e-12)
    np.testing.assert_allclose(st.psnr, [e[1] for e in expected], rtol=1e-12)
    # float32 outputs (what executors return): same figure to float32 precision
    st32 = M.noise_stats(ref.astype(np.float32), q.astype(np.float32))
    exp32 = [NoiseMetrics._compute_snr(ref[i].astype(np.float32).flatten(), q[i].astype(np.float32).flatten())
             for i in range(6)]
    np.testing.assert_allclose(st32.snr, [e[0] for e in exp32], atol=1e-4)
    assert ct is not None


def test_snr_identical_and_zero_outputs():
    ref = np.array([[1.0, -1.0]])
    assert M.snr_db(ref, ref) == pytest.approx(10 * math.log10(1.0 / 1e-7))  # the 1e-7 noise floor
    assert M.snr_db(ref, np.zeros_like(ref)) == -math.inf


def test_regression_hand_computed():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    p = np.array([1.0, 2.0, 3.0, 6.0])
    assert M.rmse(y, p) == 1.0
    assert M.mae(y, p) == 0.5
    assert M.r2(y, p) == pytest.approx(1 - 4 / 5)
    assert M.rmse(y, p[:, None]) == 1.0  # (N, 1) regressor outputs


def test_regression_matches_sklearn():
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    rng = np.random.default_rng(1)
    y, p = rng.normal(size=50), rng.normal(size=50)
    assert M.rmse(y, p) == pytest.approx(math.sqrt(mean_squared_error(y, p)), rel=1e-12)
    assert M.mae(y, p) == pytest.approx(mean_absolute_error(y, p), rel=1e-12)
    assert M.r2(y, p) == pytest.approx(r2_score(y, p), rel=1e-12)
    const = np.ones(4)
    assert M.r2(const, const) == r2_score(const, const) == 1.0
    assert M.r2(const, const + 1) == r2_score(const, const + 1) == 0.0


@pytest.mark.parametrize("call, match", [
    (lambda: M.top1_accuracy(SCORES, LABELS[:3]), "4 samples but labels has 3"),
    (lambda: M.top1_accuracy(SCORES, np.array([0, 1, 2, 3])), r"outside 0\.\.2: \[3\]"),
    (lambda: M.topk_accuracy(SCORES, LABELS, k=4), r"k must be an integer in 1\.\.3"),
    (lambda: M.topk_accuracy(SCORES, LABELS, k=0), "k must be"),
    (lambda: M.topk_accuracy(SCORES[0], LABELS, k=1), r"shape \(N, K\)"),
    (lambda: M.topk_accuracy(SCORES, np.array(["a", "b", "c", "d"]), k=1), "integer class indices"),
    (lambda: M.top1_accuracy(SCORES, np.array(["x", "dog", "eel", "cat"]), np.array(["cat", "dog", "eel"])),
     "not one of the class labels"),
    (lambda: M.topk_accuracy(SCORES, np.array(["x", "dog", "eel", "cat"]), 2, ["cat", "dog", "eel"]),
     "'x', which is not one of the class labels"),
    (lambda: M.agreement(SCORES, LABELS), "must both be labels"),
    (lambda: M.snr_db(SCORES, SCORES[:, :2]), "shape"),
    (lambda: M.snr_db(np.zeros((0, 3)), np.zeros((0, 3))), "empty"),
    (lambda: M.rmse([1.0, 2.0], [1.0]), "2 samples but y_pred has 1"),
    (lambda: M.rmse(np.ones((3, 2)), np.ones((3, 2))), "one target per sample"),
    (lambda: M.r2([1.0, np.nan], [1.0, 2.0]), "NaN"),
    (lambda: M.top1_accuracy(SCORES, 3), "scalar"),
])
def test_bad_input_raises_dataerror(call, match):
    with pytest.raises(DataError, match=match):
        call()
