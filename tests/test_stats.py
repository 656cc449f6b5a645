"""Bootstrap intervals and paired tests (repropipe.stats): known answers and small simulations."""

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import accuracy_score, f1_score

from repropipe import stats
from repropipe.metrics import compute_eer


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_weighted_eer_at_unit_weights_equals_compute_eer(seed):
    rng = np.random.default_rng(seed)
    tgt, non = rng.normal(1, 1, 57).round(1), rng.normal(0, 1, 131).round(1)  # rounding makes ties
    s = np.concatenate([tgt, non])
    y = np.r_[np.ones(57, bool), np.zeros(131, bool)]
    perm = rng.permutation(len(s))
    got = stats.ScoreSet(s[perm], y[perm]).eer(np.ones(len(s)))[0]
    assert got == pytest.approx(compute_eer(tgt, non)[0], abs=1e-12)


def test_weighted_eer_equals_eer_of_the_repeated_items():
    rng = np.random.default_rng(3)
    s, y = rng.normal(size=40).round(1), rng.random(40) < 0.4
    w = rng.integers(0, 3, 40)
    rep = np.repeat(np.arange(40), w)
    expect = compute_eer(s[rep][y[rep]], s[rep][~y[rep]])[0]
    assert stats.ScoreSet(s, y).eer(w.astype(float))[0] == pytest.approx(expect, abs=1e-12)


def test_weighted_accuracy_and_f1_match_sklearn_on_repeated_items():
    rng = np.random.default_rng(4)
    y, pred = rng.integers(0, 2, 50), rng.integers(0, 2, 50)
    w = rng.integers(0, 3, 50)
    rep = np.repeat(np.arange(50), w)
    assert stats.accuracy(y == pred, w)[0] == pytest.approx(accuracy_score(y[rep], pred[rep]))
    assert stats.macro_f1(y, pred, w)[0] == pytest.approx(
        f1_score(y[rep], pred[rep], average="macro", labels=[0, 1], zero_division=0))


def test_same_seed_same_replicates_and_names_differ():
    a = stats.Resampler(30, seed=5, name="x", n_boot=120).run(lambda w: w[:, :3])
    b = stats.Resampler(30, seed=5, name="x", n_boot=120).run(lambda w: w[:, :3])
    c = stats.Resampler(30, seed=5, name="y", n_boot=120).run(lambda w: w[:, :3])
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert a.shape == (120, 3)


def test_every_replicate_resamples_n_items():
    w = np.concatenate(list(stats.Resampler(17, seed=0, name="n", n_boot=70).weights()))
    assert w.shape == (70, 17) and (w.sum(1) == 17).all()
    groups = np.repeat([0, 1, 2], [4, 6, 7])
    wc = np.concatenate(list(stats.Resampler(17, seed=0, name="c", clusters=groups, n_boot=70).weights()))
    # two-stage: cluster multiplicities (sum 3) times within-cluster draws (each cluster's own size)
    assert set(np.unique(wc.sum(1))) <= {3 * 4, 2 * 4 + 6, 2 * 4 + 7, 4 + 2 * 6, 4 + 6 + 7, 4 + 2 * 7,
                                         3 * 6, 2 * 6 + 7, 6 + 2 * 7, 3 * 7}


def test_pair_clusters_weight_is_the_product_of_multiplicities():
    pairs = np.array([[0, 1], [0, 0], [1, 1], [1, 2], [2, 2]])
    w = np.concatenate(list(stats.Resampler(5, seed=1, name="p", clusters=pairs, n_boot=200).weights()))
    m = np.sqrt(w[:, [1, 2, 4]])  # same-cluster pairs count m * m
    assert np.allclose(m, m.round()) and (m.round().sum(1) == 3).all()  # three speakers drawn three times
    assert np.allclose(w[:, 0], m[:, 0] * m[:, 1]) and np.allclose(w[:, 3], m[:, 1] * m[:, 2])


def test_accuracy_interval_covers_the_truth_about_95_percent():
    rng = np.random.default_rng(10)
    hits = 0
    sims = 300
    for i in range(sims):
        correct = rng.random(150) < 0.8
        lo, hi = stats.interval(stats.Resampler(150, seed=i, name="acc", n_boot=400).run(
            lambda w: stats.accuracy(correct, w)))
        hits += lo <= 0.8 <= hi
    assert 0.90 <= hits / sims <= 0.99


def test_eer_interval_covers_the_truth_about_95_percent():
    truth = norm.cdf(-1.0)  # target N(2, 1), non-target N(0, 1): EER at threshold 1
    rng = np.random.default_rng(11)
    hits, sims = 0, 200
    for i in range(sims):
        s = np.r_[rng.normal(2, 1, 150), rng.normal(0, 1, 150)]
        y = np.r_[np.ones(150, bool), np.zeros(150, bool)]
        ss = stats.ScoreSet(s, y)
        lo, hi = stats.interval(stats.Resampler(300, seed=i, name="eer", n_boot=300).run(ss.eer))
        hits += lo <= truth <= hi
    assert 0.88 <= hits / sims <= 0.99


def test_cluster_bootstrap_covers_when_items_share_a_cluster_and_item_bootstrap_does_not():
    """Subjects with their own accuracy: resampling trials ignores that spread and undercovers."""
    rng = np.random.default_rng(12)
    sims, hit_c, hit_i = 150, 0, 0
    groups = np.repeat(np.arange(8), 40)
    for i in range(sims):
        p = np.clip(rng.normal(0.75, 0.12, 8), 0.01, 0.99)  # truth: mean over subjects, 0.75
        correct = rng.random(320) < p[groups]
        stat = lambda w: stats.accuracy(correct, w)  # noqa: E731
        lo, hi = stats.interval(stats.Resampler(320, seed=i, name="c", clusters=groups, n_boot=300).run(stat))
        hit_c += lo <= 0.75 <= hi
        lo, hi = stats.interval(stats.Resampler(320, seed=i, name="i", n_boot=300).run(stat))
        hit_i += lo <= 0.75 <= hi
    assert hit_c / sims >= 0.85
    assert hit_i / sims <= 0.75


def test_paired_bootstrap_finds_a_planted_difference_and_not_a_null_one():
    rng = np.random.default_rng(13)
    y = np.r_[np.ones(200, bool), np.zeros(200, bool)]
    base = rng.normal(size=400)
    ref = base + np.where(y, 1.0, -1.0) + rng.normal(0, 0.3, 400)
    better = base + np.where(y, 2.0, -2.0) + rng.normal(0, 0.3, 400)
    same = base + np.where(y, 1.0, -1.0) + rng.normal(0, 0.3, 400)
    sets = {"ref": stats.ScoreSet(ref, y), "better": stats.ScoreSet(better, y), "same": stats.ScoreSet(same, y)}
    boot = stats.Resampler(400, seed=0, name="pair").run(lambda w: np.stack([s.eer(w) for s in sets.values()], 1))
    points = {k: stats.ScoreSet(v, y).eer(np.ones(400))[0] for k, v in
              {"ref": ref, "better": better, "same": same}.items()}
    cis, tests = stats.compare_columns(points, boot, "ref")
    assert tests["better"]["significant"] and tests["better"]["diff"] < 0 and tests["better"]["p_value"] < 0.01
    assert not tests["same"]["significant"] and tests["same"]["p_value"] > 0.05
    assert all(c["ci_low"] <= c["value"] <= c["ci_high"] for c in cis.values())


def test_paired_test_false_alarm_rate_is_near_five_percent():
    rng = np.random.default_rng(14)
    sims, alarms = 200, 0
    for i in range(sims):
        a, b = rng.random(120) < 0.7, rng.random(120) < 0.7  # two equally good classifiers
        boot = stats.Resampler(120, seed=i, name="null", n_boot=300).run(
            lambda w: np.stack([stats.accuracy(a, w), stats.accuracy(b, w)], 1))
        alarms += stats.paired_test(a.mean() - b.mean(), boot[:, 0] - boot[:, 1])["significant"]
    assert alarms / sims <= 0.10


def test_mcnemar_exact_known_answers():
    a = np.r_[np.ones(10, bool), np.ones(20, bool)]
    r = np.r_[np.zeros(10, bool), np.ones(20, bool)]
    t = stats.mcnemar_exact(a, r)
    assert t["a_only_correct"] == 10 and t["ref_only_correct"] == 0
    assert t["p_value"] == pytest.approx(2 * 0.5 ** 10) and t["significant"]
    assert stats.mcnemar_exact(a, a)["p_value"] == 1.0
    # 6 vs 4 discordant pairs: P(X <= 4 | n=10) * 2 = 0.754
    a2 = np.r_[np.ones(6, bool), np.zeros(4, bool)]
    assert stats.mcnemar_exact(a2, ~a2)["p_value"] == pytest.approx(0.75390625)


def test_degenerate_replicates_are_left_out_of_the_interval():
    s, y = np.array([0.9, 0.1, 0.2, 0.3]), np.array([True, False, False, False])
    boot = stats.Resampler(4, seed=0, name="d", n_boot=200).run(stats.ScoreSet(s, y).eer)
    assert np.isnan(boot).any()  # replicates without the one target
    lo, hi = stats.interval(boot)
    assert lo == hi == 0.0


def test_formatting():
    assert stats.fmt_ci(0.5, 0.4, 0.6) == "0.500 [0.400, 0.600]"
    assert stats.fmt_ci(0.05, 0.01, 0.1, digits=2, scale=100) == "5.00 [1.00, 10.00]"
    t = stats.paired_test(0.1, np.linspace(0.05, 0.15, 101))
    assert stats.fmt_test(t).endswith("p<0.0099, significant (paired bootstrap)") and stats.fmt_test(None) == "reference"
