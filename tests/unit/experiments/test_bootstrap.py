"""experiments/reporting/bootstrap.py against closed forms, scipy and explicit scikit-learn resampling."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats
from sklearn.metrics import average_precision_score, roc_auc_score

from experiments.reporting.bootstrap import (
    MAX_DRAWS_PER_RESAMPLE,
    BootstrapUnavailable,
    acceleration,
    bca_interval,
    bootstrap_samples,
    draw_resamples,
    keeps_every_tag,
    macro_influence,
    macro_scores,
    paired_difference,
    resample_weights,
)
from lightning_modules.metrics import tagging_metrics


def _data(n_clips=80, n_tags=6, seed=1, signal=1.0):
    """Clip scores with known structure: targets drawn per tag, scores = signal * target + noise, rounded
    to 2 decimals so that ties occur (ties are where weighted ROC-AUC formulas usually go wrong)."""
    rng = np.random.default_rng(seed)
    rates = np.linspace(0.05, 0.4, n_tags)
    targets = (rng.random((n_clips, n_tags)) < rates).astype(np.uint8)
    targets[:, -1] = 0
    targets[0, -1] = 1  # a rare tag: one positive, absent from many free resamples
    scores = 1 / (1 + np.exp(-(signal * (2 * targets.astype(np.float64) - 1) + rng.normal(0, 1.2, targets.shape))))
    return np.round(scores, 2).astype(np.float32), targets


def _small_skewed(seed=11, n_clips=60, rates=(0.3, 0.02, 0.02, 0.02, 0.02), signal=0.3):
    """A small test set with one common and four rare tags (one or two positives each) and a weak model: the
    situation in which resampling freely and averaging over the tags each resample still has went wrong."""
    rng = np.random.default_rng(seed)
    targets = (rng.random((n_clips, len(rates))) < np.array(rates)).astype(np.uint8)
    for tag in range(targets.shape[1]):
        if targets[:, tag].sum() == 0:
            targets[rng.integers(n_clips), tag] = 1
    z = signal * (2 * targets.astype(np.float64) - 1) + rng.normal(0, 1.3, targets.shape)
    return np.round(1 / (1 + np.exp(-z)), 3).astype(np.float32), targets


def _sklearn_macro(probs, targets, weights=None, tags=None):
    """scikit-learn's ROC-AUC and AP per tag, averaged over `tags` (default: those with a positive and a negative)."""
    if tags is None:
        tags = [t for t in range(targets.shape[1]) if 0 < targets[:, t].sum() < targets.shape[0]]
    rocs = [roc_auc_score(targets[:, t], probs[:, t], sample_weight=weights) for t in tags]
    aps = [average_precision_score(targets[:, t], probs[:, t], sample_weight=weights) for t in tags]
    return np.mean(rocs), np.mean(aps)


def _scored(targets):
    return [t for t in range(targets.shape[1]) if 0 < targets[:, t].sum() < targets.shape[0]]


# ---- the estimator: what is resampled and scored ------------------------------------------------
def test_plain_weights_give_the_runs_reported_metrics():
    probs, targets = _data()
    ones = np.ones((1, probs.shape[0]))
    scores = macro_scores(probs, targets, ones)
    report = tagging_metrics(torch.from_numpy(probs), torch.from_numpy(targets), [str(i) for i in range(6)])
    assert scores["roc_auc"][0] == pytest.approx(report.roc_auc, abs=1e-6)
    assert scores["pr_auc"][0] == pytest.approx(report.pr_auc, abs=1e-6)


def test_each_resample_scores_every_tag_of_the_point_estimate_as_scikit_learn_does_on_the_resampled_clips():
    probs, targets = _data()
    indices = draw_resamples(targets, 60, seed=7)
    (samples,) = bootstrap_samples([probs], targets, 60, seed=7)
    tags = _scored(targets)
    for i in indices:  # every resample keeps a positive and a negative of every scored tag, the rare one included
        assert all(0 < targets[i, t].sum() < len(i) for t in tags)
    explicit = np.array([_sklearn_macro(probs[i], targets[i], tags=tags) for i in indices])
    np.testing.assert_allclose(samples["roc_auc"], explicit[:, 0], atol=1e-12)
    np.testing.assert_allclose(samples["pr_auc"], explicit[:, 1], atol=1e-12)


def test_resamples_are_the_ordinary_bootstraps_draws_minus_those_that_lose_a_tag():
    probs, targets = _data()
    n, wanted = len(targets), 50
    rng = np.random.default_rng(3)
    kept = []
    while len(kept) < wanted:  # brute force: draw batch after batch, keep the rows holding every scored tag
        for row in rng.integers(0, n, size=(wanted, n), dtype=np.int64):
            if len(kept) < wanted and all(0 < targets[row, t].sum() < n for t in _scored(targets)):
                kept.append(row)
    np.testing.assert_array_equal(draw_resamples(targets, wanted, seed=3), np.array(kept))
    common = ((np.arange(n)[:, None] + np.arange(targets.shape[1])) % 2).astype(np.uint8)  # half the clips each
    # no tag can be lost in practice: exactly the ordinary bootstrap
    np.testing.assert_array_equal(draw_resamples(common, wanted, seed=3),
                                  np.random.default_rng(3).integers(0, n, size=(wanted, n), dtype=np.int64))


def test_free_resampling_excluded_the_estimate_and_the_conditioned_bca_interval_contains_it():
    """The issue's case: averaging each free resample over the tags it still has estimates another quantity."""
    probs, targets = _small_skewed()
    point = _sklearn_macro(probs, targets)[1]
    free = np.random.default_rng(0).integers(0, len(targets), size=(300, len(targets)))
    old = [_sklearn_macro(probs[i], targets[i])[1] for i in free]  # the tags present in each resample
    low, high = np.percentile(old, [2.5, 97.5])
    assert point < low  # the old interval did not contain its own estimate
    (samples,) = bootstrap_samples([probs], targets, 1000, seed=0)
    interval = bca_interval(samples["pr_auc"], point, macro_influence(probs, targets)["pr_auc"])
    assert interval.published and interval.low <= point <= interval.high
    assert interval.z0 < 0  # the resampled values still lean above the estimate: BCa moves the interval down
    assert np.percentile(samples["pr_auc"], 2.5) < point


def test_a_test_set_too_small_to_keep_its_tags_is_refused_naming_them():
    n = 20
    targets = np.zeros((n, 8), dtype=np.uint8)
    targets[np.arange(8), np.arange(8)] = 1  # eight tags with a single positive clip each
    assert keeps_every_tag(np.ones((1, n)), targets).all()
    with pytest.raises(BootstrapUnavailable, match="too small") as error:
        draw_resamples(targets, 100, seed=0)
    assert "1 positive of 20" in str(error.value) and f"of {MAX_DRAWS_PER_RESAMPLE * 100}" in str(error.value)


# ---- influence and BCa ----------------------------------------------------------------------------
def test_influence_is_the_derivative_of_scikit_learns_weighted_metrics():
    probs, targets = _data(n_clips=50, n_tags=4, seed=2)
    influence = macro_influence(probs, targets)
    h = 1e-5
    for k in range(len(targets)):
        up, down = np.ones(len(targets)), np.ones(len(targets))
        up[k] += h
        down[k] -= h
        numeric = (np.array(_sklearn_macro(probs, targets, up)) - np.array(_sklearn_macro(probs, targets, down)))
        numeric /= 2 * h
        assert (influence["roc_auc"][k], influence["pr_auc"][k]) == pytest.approx(tuple(numeric), abs=1e-8)
    for values in influence.values():  # scaling every weight changes nothing: the influences sum to zero
        assert abs(values.sum()) < 1e-12


def test_bca_is_scipys_bca_for_the_mean():
    x = np.random.default_rng(5).exponential(size=40)
    result = stats.bootstrap((x,), np.mean, method="BCa", n_resamples=2000, rng=np.random.default_rng(1))
    interval = bca_interval(result.bootstrap_distribution, x.mean(), x - x.mean())  # the mean's influence
    assert (interval.low, interval.high) == pytest.approx(tuple(result.confidence_interval), rel=1e-12)
    u = x - x.mean()
    assert interval.acceleration == pytest.approx((u**3).sum() / (6 * (u**2).sum() ** 1.5))


def test_without_bias_or_skew_bca_is_the_percentile_interval():
    samples = 0.7 + np.concatenate([np.linspace(-0.05, 0.05, 201)])  # symmetric around the estimate: z0 = 0
    influence = np.array([-2.0, -1.0, 1.0, 2.0])  # symmetric: a = 0
    assert acceleration(influence) == 0.0
    interval = bca_interval(samples, 0.7, influence)
    assert interval.z0 == 0.0
    assert (interval.low, interval.high) == pytest.approx(tuple(np.percentile(samples, [2.5, 97.5])))


def test_an_interval_that_would_exclude_its_estimate_is_not_published():
    samples = np.linspace(0.50, 0.60, 100)
    interval = bca_interval(samples, 0.40, np.array([-1.0, 1.0]))  # every resample above the estimate
    assert not interval.published and np.isnan(interval.low) and "above the estimate" in interval.reason
    lopsided = np.concatenate([np.full(3, 0.39), np.linspace(0.5, 0.6, 197)])  # 1.5% below: |z0| > 1.96
    interval = bca_interval(lopsided, 0.40, np.array([-1.0, 1.0]))
    assert not interval.published and "would exclude the estimate 0.4000" in interval.reason


def test_every_published_interval_contains_its_estimate():
    for seed in range(12):
        probs, targets = _small_skewed(seed=seed)
        try:
            (samples,) = bootstrap_samples([probs], targets, 400, seed=seed)
        except BootstrapUnavailable:
            continue
        influence = macro_influence(probs, targets)
        for metric in ("roc_auc", "pr_auc"):
            point = macro_scores(probs, targets, np.ones((1, len(targets))))[metric][0]
            interval = bca_interval(samples[metric], point, influence[metric])
            assert interval.low <= point <= interval.high if interval.published else interval.reason


# ---- paired differences ---------------------------------------------------------------------------
def _better(probs_a, targets, seed=4, step=0.25):
    """B: A's scores moved towards the truth on every clip by up to `step` (away from it when negative)."""
    rng = np.random.default_rng(seed)
    return np.round(np.clip(probs_a + step * (2 * targets.astype(np.float64) - 1) * rng.random(targets.shape), 0, 1), 2)


def test_paired_difference_resamples_both_runs_on_the_same_clips():
    probs_a, targets = _data(seed=3, signal=0.8)
    probs_b = _better(probs_a, targets)
    indices = draw_resamples(targets, 80, seed=11)
    a, b = bootstrap_samples([probs_a, probs_b], targets, 80, seed=11)
    point_a, point_b = _sklearn_macro(probs_a, targets)[0], _sklearn_macro(probs_b, targets)[0]
    explicit = np.array([_sklearn_macro(probs_b[i], targets[i])[0] - _sklearn_macro(probs_a[i], targets[i])[0]
                         for i in indices])
    np.testing.assert_allclose(b["roc_auc"] - a["roc_auc"], explicit, atol=1e-12)
    influence_a, influence_b = macro_influence(probs_a, targets), macro_influence(probs_b, targets)
    diff = paired_difference(a["roc_auc"], b["roc_auc"], point_a, point_b, influence_a["roc_auc"],
                             influence_b["roc_auc"])
    expected = bca_interval(explicit, point_b - point_a, influence_b["roc_auc"] - influence_a["roc_auc"])
    assert (diff.low, diff.high) == pytest.approx((expected.low, expected.high), abs=1e-12)
    assert diff.value == pytest.approx(point_b - point_a) and diff.value > 0
    assert diff.separates and 0 < diff.low < diff.value < diff.high and diff.p_value < 0.05


def test_a_run_compared_with_itself_differs_by_zero_with_p_one():
    probs, targets = _data()
    a, b = bootstrap_samples([probs, probs.copy()], targets, 200, seed=0)
    influence = macro_influence(probs, targets)
    for metric in ("roc_auc", "pr_auc"):
        diff = paired_difference(a[metric], b[metric], 0.7, 0.7, influence[metric], influence[metric])
        assert (diff.value, diff.low, diff.high, diff.p_value, diff.reason) == (0.0, 0.0, 0.0, 1.0, None)
        assert not diff.separates


def test_p_is_below_5_percent_exactly_when_the_95_percent_interval_excludes_0():
    probs_a, targets = _data(n_clips=120, seed=6, signal=0.8)
    checked = set()
    for step, noise, seed in [(0.0, 0.1, 1), (0.0, 0.2, 2), (0.02, 0.1, 3), (0.04, 0.15, 4), (0.06, 0.1, 5),
                              (-0.03, 0.1, 6), (0.01, 0.05, 7), (0.03, 0.2, 8)]:
        rng = np.random.default_rng(seed)  # B: A moved towards (or away from) the truth, plus noise
        probs_b = np.round(np.clip(probs_a + step * (2 * targets - 1.0) + rng.normal(0, noise, targets.shape), 0, 1), 2)
        a, b = bootstrap_samples([probs_a, probs_b], targets, 400, seed=seed)
        ia, ib = macro_influence(probs_a, targets), macro_influence(probs_b, targets)
        for metric in ("roc_auc", "pr_auc"):
            pa, pb = (macro_scores(p, targets, np.ones((1, len(targets))))[metric][0] for p in (probs_a, probs_b))
            diff = paired_difference(a[metric], b[metric], pa, pb, ia[metric], ib[metric])
            assert diff.published
            assert (diff.p_value < 0.05) == diff.separates, (step, noise, metric, diff)
            checked.add(diff.separates)
    assert checked == {True, False}  # both sides of the rule were exercised


def test_interval_shrinks_with_more_clips():
    widths = []
    for n_clips in (100, 400, 1600):
        probs, targets = _data(n_clips=n_clips, seed=5)
        (samples,) = bootstrap_samples([probs], targets, 200, seed=0)
        point = macro_scores(probs, targets, np.ones((1, n_clips)))["roc_auc"][0]
        interval = bca_interval(samples["roc_auc"], point, macro_influence(probs, targets)["roc_auc"])
        widths.append(interval.high - interval.low)
    # sqrt(n) scaling: each fourfold increase roughly halves the width
    assert widths[0] > 1.4 * widths[1] > 1.4 * 1.4 * widths[2], widths


def test_seeded_reruns_are_identical_and_seeds_differ():
    probs, targets = _data()
    first = bootstrap_samples([probs], targets, 50, seed=3)[0]["roc_auc"]
    again = bootstrap_samples([probs], targets, 50, seed=3)[0]["roc_auc"]
    other = bootstrap_samples([probs], targets, 50, seed=4)[0]["roc_auc"]
    assert np.array_equal(first, again) and not np.array_equal(first, other)


def test_weights_count_draws():
    indices = np.array([[0, 0, 2], [1, 2, 2]])
    np.testing.assert_array_equal(resample_weights(indices, 3), [[2, 0, 1], [0, 1, 2]])
