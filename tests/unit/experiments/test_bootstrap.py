"""The bootstrap of lightning_modules/bootstrap.py against closed forms and explicit scikit-learn resampling."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from experiments.reporting.bootstrap import (
    bootstrap_indices,
    bootstrap_samples,
    macro_scores,
    paired_difference,
    percentile_interval,
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
    targets[0, -1] = 1  # a rare tag: one positive, absent from many resamples
    scores = 1 / (1 + np.exp(-(signal * (2 * targets.astype(np.float64) - 1) + rng.normal(0, 1.2, targets.shape))))
    return np.round(scores, 2).astype(np.float32), targets


def _sklearn_macro(probs, targets):
    """scikit-learn's ROC-AUC and AP per tag, averaged over the tags with a positive and a negative."""
    rocs, aps = [], []
    for t in range(targets.shape[1]):
        if 0 < targets[:, t].sum() < targets.shape[0]:
            rocs.append(roc_auc_score(targets[:, t], probs[:, t]))
            aps.append(average_precision_score(targets[:, t], probs[:, t]))
    return np.mean(rocs), np.mean(aps)


def test_plain_weights_give_the_runs_reported_metrics():
    probs, targets = _data()
    ones = np.ones((1, probs.shape[0]))
    scores = macro_scores(probs, targets, ones)
    report = tagging_metrics(torch.from_numpy(probs), torch.from_numpy(targets), [str(i) for i in range(6)])
    assert scores["roc_auc"][0] == pytest.approx(report.roc_auc, abs=1e-6)
    assert scores["pr_auc"][0] == pytest.approx(report.pr_auc, abs=1e-6)


def test_each_resample_equals_scikit_learn_on_the_explicitly_resampled_clips():
    probs, targets = _data()
    indices = bootstrap_indices(len(probs), 60, seed=7)
    (samples,) = bootstrap_samples([probs], targets, 60, seed=7)
    explicit = np.array([_sklearn_macro(probs[i], targets[i]) for i in indices])
    np.testing.assert_allclose(samples["roc_auc"], explicit[:, 0], atol=1e-12)
    np.testing.assert_allclose(samples["pr_auc"], explicit[:, 1], atol=1e-12)
    assert percentile_interval(samples["roc_auc"]) == pytest.approx(tuple(np.percentile(explicit[:, 0], [2.5, 97.5])))


def test_paired_difference_matches_scikit_learn_resampling_of_two_runs():
    probs_a, targets = _data(seed=3, signal=0.8)
    rng = np.random.default_rng(4)  # B: A's scores moved towards the truth on every clip, so B is better
    probs_b = np.round(np.clip(probs_a + 0.25 * (2 * targets.astype(np.float64) - 1) * rng.random(targets.shape), 0, 1), 2)
    indices = bootstrap_indices(len(targets), 80, seed=11)
    a, b = bootstrap_samples([probs_a, probs_b], targets, 80, seed=11)
    point_a, point_b = _sklearn_macro(probs_a, targets)[0], _sklearn_macro(probs_b, targets)[0]
    diff = paired_difference(a["roc_auc"], b["roc_auc"], point_a, point_b)
    explicit = np.array([_sklearn_macro(probs_b[i], targets[i])[0] - _sklearn_macro(probs_a[i], targets[i])[0]
                         for i in indices])
    low, high = np.percentile(explicit, [2.5, 97.5])
    assert (diff.low, diff.high) == pytest.approx((low, high), abs=1e-12)
    assert diff.value == pytest.approx(point_b - point_a) and diff.value > 0
    assert 0 < low  # B separates the classes better on every clip: the interval excludes 0
    expected_p = min(1.0, 2 * min((explicit <= 0).sum() + 1, (explicit >= 0).sum() + 1) / (len(explicit) + 1))
    assert diff.p_value == pytest.approx(expected_p) and diff.p_value < 0.05


def test_a_run_compared_with_itself_differs_by_zero_with_p_one():
    probs, targets = _data()
    a, b = bootstrap_samples([probs, probs.copy()], targets, 200, seed=0)
    for metric in ("roc_auc", "pr_auc"):
        diff = paired_difference(a[metric], b[metric], 0.7, 0.7)
        assert (diff.value, diff.low, diff.high, diff.p_value) == (0.0, 0.0, 0.0, 1.0)


def test_interval_shrinks_with_more_clips():
    widths = []
    for n_clips in (100, 400, 1600):
        probs, targets = _data(n_clips=n_clips, seed=5)
        (samples,) = bootstrap_samples([probs], targets, 200, seed=0)
        low, high = percentile_interval(samples["roc_auc"])
        widths.append(high - low)
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
