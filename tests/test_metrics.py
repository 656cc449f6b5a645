import numpy as np
import pytest

from repropipe.metrics import compute_eer, det_curve


def test_separable_scores_give_zero_eer():
    eer, thr = compute_eer([2.0, 3.0, 4.0], [-1.0, 0.0, 1.0])
    assert eer == 0.0 and 1.0 < thr <= 2.0


def test_all_tied_scores_give_half():
    assert compute_eer([0.3] * 5, [0.3] * 7)[0] == 0.5


def test_inverted_scores_give_high_eer():
    assert compute_eer([1, 2, 3, 4], [2.5, 5, 6, 7])[0] == pytest.approx(0.75)


def test_known_crossing():
    # threshold 0.5: bona fide 0.4 rejected (FRR 1/4), spoof 0.6 accepted (FAR 1/4)
    eer, thr = compute_eer([0.4, 0.7, 0.8, 0.9], [0.1, 0.2, 0.3, 0.6])
    assert eer == pytest.approx(0.25) and thr == pytest.approx(0.6)


def test_matches_brute_force_on_random_scores():
    rng = np.random.default_rng(0)
    tgt, non = rng.normal(1, 1, 300).round(1), rng.normal(0, 1, 500).round(1)  # rounding makes ties
    frr, far, _ = det_curve(tgt, non)
    eer, _ = compute_eer(tgt, non)
    brute = min(max(np.mean(tgt < t), np.mean(non >= t)) for t in np.unique(np.concatenate([tgt, non])))
    assert abs(eer - brute) <= 1.0 / 300 + 1e-12  # within one step of the DET staircase
    assert np.all(np.diff(far) >= 0) and np.all(np.diff(frr) <= 0)


def test_empty_or_nan_scores_are_refused():
    with pytest.raises(ValueError):
        compute_eer([], [1.0])
    with pytest.raises(ValueError):
        compute_eer([np.nan], [1.0])
