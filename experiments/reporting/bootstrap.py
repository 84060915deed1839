"""Bootstrap confidence intervals and paired differences for macro ROC-AUC and PR-AUC over test clips.

Why: on MTAT's 4,332-5,329 test clips two taggers 0.002 apart may or may not differ. Resampling
the test clips with replacement (the clips are the random sample; the models are fixed) gives
the spread a metric would have on another test set drawn the same way:

* a 95% interval of one run's (or one seed group's) macro ROC-AUC / PR-AUC: the 2.5th and 97.5th
  percentiles of the metric over `n_resamples` resampled test sets (percentile bootstrap);
* a paired difference B - A: both models are scored on the *same* resampled clips in every
  resample, so the clip-to-clip difficulty that both share cancels; its interval comes from the
  percentiles of the per-resample differences, and its two-sided p-value is
  ``min(1, 2 min(#(d <= 0) + 1, #(d >= 0) + 1) / (n + 1))``: the fraction of resamples on the
  other side of 0, doubled (p < 0.05 exactly when 0 falls outside the 95% interval, up to the
  +1 that keeps a finite bootstrap from claiming p = 0). A run compared with itself has
  difference 0 in every resample and p = 1.

The metrics are those of `lightning_modules.metrics.tagging_metrics` (the numbers every run
reports): per tag the exact ROC-AUC (ties count one half) and average precision
(scikit-learn's `average_precision_score`, which torchmetrics equals), averaged over the tags
that have at least one positive and one negative clip *in that resample* (a tag without any
is left out, as the run's own report leaves it out). A resample is the multiset of drawn clips,
so each metric is computed with each clip weighted by the number of times it was drawn: all
resamples at once with NumPy (one sort and one running sum per tag), identical to calling scikit-learn on
the explicitly resampled arrays (`tests/unit/experiments/test_bootstrap.py` checks it). Seeded: the resample
indices are `numpy.random.default_rng(seed).integers(0, n_clips, (n_resamples, n_clips))`, the
same for every run in a comparison.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

METRICS = ("roc_auc", "pr_auc")
DEFAULT_RESAMPLES = 1000
DEFAULT_SEED = 0
LEVEL = 0.95


def bootstrap_indices(n_clips: int, n_resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED) -> np.ndarray:
    """(n_resamples, n_clips) int64 clip positions drawn with replacement, seeded."""
    if n_clips < 1 or n_resamples < 1:
        raise ValueError(f"bootstrap_indices: need at least one clip and one resample, got {n_clips}, {n_resamples}")
    return np.random.default_rng(seed).integers(0, n_clips, size=(n_resamples, n_clips), dtype=np.int64)


def resample_weights(indices: np.ndarray, n_clips: int) -> np.ndarray:
    """How many times each clip was drawn in each resample: (n_resamples, n_clips) float32 (exact integers)."""
    indices = np.asarray(indices, dtype=np.int64)
    offsets = indices + (np.arange(indices.shape[0], dtype=np.int64) * n_clips)[:, None]
    counts = np.bincount(offsets.ravel(), minlength=indices.shape[0] * n_clips)
    return counts.reshape(indices.shape[0], n_clips).astype(np.float32)


def _tag_scores(scores: np.ndarray, positive: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weighted ROC-AUC and average precision of one tag in every resample, and which resamples can score it.

    `scores` (N,), `positive` (N,) bool, `weights` (B, N) draw counts. Clips with equal scores form
    one group (a threshold puts them all in or all out), as in the exact ROC curve. With the clips
    sorted by score, everything follows from running sums of the weights: for a positive clip in
    the tie group [lo, hi), the negatives below it weigh neg(<lo) plus half of neg(lo..hi) (its
    ROC-AUC share), and at the group's threshold the precision is TP / (TP + FP) with
    TP = P - pos(<lo), FP = N - neg(<lo) (average precision adds each positive's weight times it).
    Only one (B, N) gather and running sum per tag; the rest touches the positive clips only.
    Draw counts are integers below 2^24, so float32 sums are exact.
    """
    order = np.argsort(scores, kind="stable")
    ranked = scores[order]
    pos_at = np.flatnonzero(positive[order])  # sorted positions of the positive clips
    lo = np.searchsorted(ranked, ranked[pos_at], side="left")  # their tie groups [lo, hi)
    hi = np.searchsorted(ranked, ranked[pos_at], side="right")
    b = weights.shape[0]
    cum_all = np.zeros((b, len(ranked) + 1), dtype=np.float32)
    np.cumsum(weights[:, order], axis=1, out=cum_all[:, 1:])
    w_pos = weights[:, order[pos_at]].astype(np.float64)
    cum_pos = np.zeros((b, len(pos_at) + 1))
    np.cumsum(w_pos, axis=1, out=cum_pos[:, 1:])
    pos_lo = cum_pos[:, np.searchsorted(pos_at, lo)]
    pos_hi = cum_pos[:, np.searchsorted(pos_at, hi)]
    neg_lo = cum_all[:, lo].astype(np.float64) - pos_lo
    neg_hi = cum_all[:, hi].astype(np.float64) - pos_hi
    n_pos = cum_pos[:, -1]
    n_neg = cum_all[:, -1].astype(np.float64) - n_pos
    valid = (n_pos > 0) & (n_neg > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        roc = (w_pos * 0.5 * (neg_lo + neg_hi)).sum(axis=1) / (n_pos * n_neg)
        tp = n_pos[:, None] - pos_lo
        fp = n_neg[:, None] - neg_lo
        precision = np.where(w_pos > 0, tp / np.where(tp + fp > 0, tp + fp, 1), 0.0)
        ap = (w_pos * precision).sum(axis=1) / n_pos
    return np.where(valid, roc, np.nan), np.where(valid, ap, np.nan), valid


def macro_scores(probs: np.ndarray, targets: np.ndarray, weights: np.ndarray) -> dict[str, np.ndarray]:
    """Macro ROC-AUC and PR-AUC of clip probabilities in each weighted resample: {"roc_auc": (B,), "pr_auc": (B,)}.

    `probs`, `targets` (N, T); `weights` (B, N) from `resample_weights` (all ones: the plain metric).
    A resample in which no tag has both a positive and a negative clip scores NaN.
    """
    probs = np.asarray(probs, dtype=np.float64)
    positive = np.asarray(targets) > 0
    weights = np.atleast_2d(np.asarray(weights, dtype=np.float32))
    if probs.ndim != 2 or positive.shape != probs.shape or weights.shape[1] != probs.shape[0]:
        raise ValueError(f"macro_scores: probs {probs.shape}, targets {positive.shape}, weights {weights.shape}")
    roc_sum = np.zeros(weights.shape[0])
    ap_sum = np.zeros(weights.shape[0])
    counted = np.zeros(weights.shape[0])
    for tag in range(probs.shape[1]):
        if not positive[:, tag].any() or positive[:, tag].all():
            continue  # no resample can score it
        roc, ap, valid = _tag_scores(probs[:, tag], positive[:, tag], weights)
        roc_sum += np.where(valid, roc, 0.0)
        ap_sum += np.where(valid, ap, 0.0)
        counted += valid
    with np.errstate(invalid="ignore", divide="ignore"):
        return {"roc_auc": np.where(counted > 0, roc_sum / counted, np.nan),
                "pr_auc": np.where(counted > 0, ap_sum / counted, np.nan)}


def percentile_interval(samples: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """The (1 - level) / 2 and (1 + level) / 2 percentiles of the finite samples."""
    samples = np.asarray(samples, dtype=np.float64)
    samples = samples[np.isfinite(samples)]
    if samples.size == 0:
        return (float("nan"), float("nan"))
    low, high = np.percentile(samples, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    return float(low), float(high)


def paired_p_value(differences: np.ndarray) -> float:
    """Two-sided bootstrap p-value of "no difference" from per-resample differences (see the module docstring)."""
    d = np.asarray(differences, dtype=np.float64)
    d = d[np.isfinite(d)]
    if d.size == 0:
        return float("nan")
    below, above = int((d <= 0).sum()), int((d >= 0).sum())
    return float(min(1.0, 2 * min(below + 1, above + 1) / (d.size + 1)))


@dataclass(frozen=True)
class Difference:
    """B - A for one metric: the point difference, its paired bootstrap interval and p-value."""

    value: float
    low: float
    high: float
    p_value: float


def paired_difference(samples_a: np.ndarray, samples_b: np.ndarray, point_a: float, point_b: float,
                      level: float = LEVEL) -> Difference:
    """B - A from per-resample scores of A and B computed on the same resamples."""
    d = np.asarray(samples_b, dtype=np.float64) - np.asarray(samples_a, dtype=np.float64)
    low, high = percentile_interval(d, level)
    return Difference(float(point_b - point_a), low, high, paired_p_value(d))


def bootstrap_samples(runs_probs: list[np.ndarray], targets: np.ndarray, n_resamples: int = DEFAULT_RESAMPLES,
                      seed: int = DEFAULT_SEED) -> list[dict[str, np.ndarray]]:
    """Per-resample macro scores of several runs on the same test clips, all on the same resamples."""
    n_clips = np.asarray(targets).shape[0]
    weights = resample_weights(bootstrap_indices(n_clips, n_resamples, seed), n_clips)
    return [macro_scores(probs, targets, weights) for probs in runs_probs]
