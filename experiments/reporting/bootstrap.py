"""Bootstrap confidence intervals and paired differences for macro ROC-AUC and PR-AUC over test clips.

Why: on MTAT's 4,332-5,329 test clips two taggers 0.002 apart may or may not differ. Resampling
the test clips with replacement (the clips are the random sample; the models are fixed) gives
the spread a metric would have on another test set drawn the same way:

* a 95% interval of one run's (or one seed group's) macro ROC-AUC / PR-AUC;
* a paired difference B - A: both models are scored on the *same* resampled clips in every
  resample, so the clip-to-clip difficulty that both share cancels; it gets an interval and a
  two-sided p-value of "no difference". A run compared with itself has difference 0 in every
  resample, the interval [0, 0] and p = 1.

The metrics are those of `lightning_modules.metrics.tagging_metrics` (the numbers every run
reports): per tag the exact ROC-AUC (ties count one half) and average precision
(scikit-learn's `average_precision_score`, which torchmetrics equals), averaged over the tags
that have at least one positive and one negative test clip (the *scored* tags). A resample is
the multiset of drawn clips, so each metric is computed with each clip weighted by the number of
times it was drawn: all resamples at once with NumPy (one sort and one running sum per tag),
identical to calling scikit-learn on the explicitly resampled arrays
(`tests/unit/experiments/test_bootstrap.py` checks it).

Every resample estimates the point estimate's quantity
    The point estimate averages over the tags scored on the whole test set. A resample drawn
    freely can lose every positive clip of a rare tag; averaging that resample over the tags it
    still has (what this module did before) makes it estimate the mean over another, smaller set
    of tags, without the rare ones, whose scores usually differ from the rest (a rare tag's
    average precision is low). The resampled values then centre on another number than the
    estimate, and an interval built from them can exclude the estimate it is meant to surround.
    So the resamples are *conditioned* on keeping at least one positive and one negative clip of
    every scored tag: a drawn resample that loses one is discarded and another drawn, and the
    first `n_resamples` that keep every tag are used (in draw order, seeded, the same for every
    run compared). Each then averages exactly the point estimate's tags. Where every tag has many
    positive clips, hardly any draw is discarded and this is the ordinary bootstrap, draw for
    draw. Where most draws lose a tag, the test set is too small for resampling to imitate
    another test set: after `MAX_DRAWS_PER_RESAMPLE` draws per wanted resample, no interval is
    given and `BootstrapUnavailable` says which tags are too rare.

    The alternatives do worse. Stratifying the resampling per tag is not possible when every
    clip carries several tags; stratifying by whole label set keeps each tag's count, but most
    label sets occur once, so most clips would be drawn exactly once in every resample and the
    spread would be understated. Weighting every clip by a positive random weight (the Bayesian
    bootstrap) never loses a tag, but its weights are more skewed than the ordinary bootstrap's
    draw counts, which the interval's skewness correction below assumes.

The interval: BCa
    A percentile interval assumes the resampled values scatter around the estimate without
    bias; for a skewed statistic on a small test set (average precision of rare tags) they do
    not. The bias-corrected and accelerated (BCa) interval corrects for both the shift and the
    skew (Efron 1987; Efron & Tibshirani, *An Introduction to the Bootstrap*, ch. 14): with
    ``z0 = Phi^-1(share of resamples below the estimate, ties counting half)`` and the
    acceleration ``a = sum(U^3) / (6 sum(U^2)^(3/2))``, its ends are the resampled values' quantiles
    ``Phi(z0 + (z0 + z) / (1 - a (z0 + z)))`` for ``z = Phi^-1(0.025), Phi^-1(0.975)``. ``U`` holds the
    clips' empirical influence values, the derivative of the macro metric with respect to each
    clip's weight (the infinitesimal jackknife), in closed form for ROC-AUC and average precision
    (`macro_influence`). The leave-one-out jackknife, BCa's usual source for ``a``, is undefined
    here: leaving out the only positive clip of a tag leaves the tag unscored. For a seed group the
    statistic is the seeds' mean, whose resampled values and influence are the seeds' means; for a
    difference, B's minus A's.

    An interval that does not contain its estimate is never published. BCa's interval contains
    the estimate whenever the estimate lies well inside the resampled values; when it does not
    (every resample on one side of the estimate, or an acceleration so large that the BCa map
    breaks down), `Interval.reason` says why and the comparison prints that instead of numbers.

The p-value of a difference is the BCa interval inverted: two-sided, twice the nominal tail
level at which 0 is an end of the BCa interval, so that p < 0.05 exactly when 0 falls outside the
95% BCa interval, up to the resolution of a finite bootstrap (0's share among the resampled
differences is shrunk by half a resample towards the middle, and p is never below 2 / (n + 1):
a finite bootstrap cannot claim more).
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

METRICS = ("roc_auc", "pr_auc")
DEFAULT_RESAMPLES = 1000
DEFAULT_SEED = 0
LEVEL = 0.95
MAX_DRAWS_PER_RESAMPLE = 20
"""Draws per wanted resample before the conditioned bootstrap gives up (see the module docstring)."""

_NORMAL = NormalDist()


class BootstrapUnavailable(Exception):
    """Too few resamples of this test set keep a positive and a negative clip of every scored tag."""


# --------------------------------------------------------------------------------------------
# Resamples
# --------------------------------------------------------------------------------------------
def scored_tags(targets: np.ndarray) -> np.ndarray:
    """Bool (T,): the tags with at least one positive and one negative clip (the point estimate's tags)."""
    positive = np.asarray(targets) > 0
    return positive.any(axis=0) & ~positive.all(axis=0)


def resample_weights(indices: np.ndarray, n_clips: int) -> np.ndarray:
    """How many times each clip was drawn in each resample: (n_resamples, n_clips) float32 (exact integers)."""
    indices = np.asarray(indices, dtype=np.int64)
    offsets = indices + (np.arange(indices.shape[0], dtype=np.int64) * n_clips)[:, None]
    counts = np.bincount(offsets.ravel(), minlength=indices.shape[0] * n_clips)
    return counts.reshape(indices.shape[0], n_clips).astype(np.float32)


def keeps_every_tag(weights: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Bool (B,): which weighted resamples hold a positive and a negative clip of every scored tag."""
    positive = (np.asarray(targets) > 0)[:, scored_tags(targets)].astype(np.float32)
    weights = np.atleast_2d(np.asarray(weights, dtype=np.float32))
    drawn_positive = weights @ positive  # exact: integer counts below 2^24
    drawn_negative = weights.sum(axis=1, keepdims=True) - drawn_positive
    return ((drawn_positive > 0) & (drawn_negative > 0)).all(axis=1)


def draw_resamples(targets: np.ndarray, n_resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED) -> np.ndarray:
    """(n_resamples, n_clips) int64 clip positions drawn with replacement, each resample keeping a positive and a
    negative clip of every scored tag (see the module docstring).

    Draws ``numpy.random.default_rng(seed).integers(0, n_clips, (n_resamples, n_clips))`` batch after batch
    and keeps the first `n_resamples` acceptable rows in draw order, so the result depends on the seed, the
    targets and `n_resamples` only. Raises `BootstrapUnavailable` (naming the rarest tags) when
    `MAX_DRAWS_PER_RESAMPLE` x `n_resamples` draws do not give `n_resamples`, and ValueError when no tag is scored.
    """
    targets = np.asarray(targets)
    n_clips = targets.shape[0]
    if n_clips < 1 or n_resamples < 1:
        raise ValueError(f"draw_resamples: need at least one clip and one resample, got {n_clips}, {n_resamples}")
    if not scored_tags(targets).any():
        raise ValueError("draw_resamples: no tag has both a positive and a negative clip")
    rng = np.random.default_rng(seed)
    kept: list[np.ndarray] = []
    found = drawn = 0
    while found < n_resamples and drawn < MAX_DRAWS_PER_RESAMPLE * n_resamples:
        batch = rng.integers(0, n_clips, size=(n_resamples, n_clips), dtype=np.int64)
        drawn += n_resamples
        good = batch[keeps_every_tag(resample_weights(batch, n_clips), targets)]
        kept.append(good[:n_resamples - found])
        found += len(kept[-1])
    if found < n_resamples:
        positives = (targets > 0).sum(axis=0)
        scored = np.flatnonzero(scored_tags(targets))
        rare = sorted(scored, key=lambda t: min(positives[t], n_clips - positives[t]))[:3]
        counts = ", ".join(f"tag {t}: {positives[t]} positive of {n_clips}" for t in rare)
        raise BootstrapUnavailable(
            f"only {found} of {drawn} resampled test sets kept a positive and a negative clip of every scored tag "
            f"({counts}): the test set is too small for the bootstrap to imitate another test set")
    return np.concatenate(kept)


# --------------------------------------------------------------------------------------------
# Scores and influence
# --------------------------------------------------------------------------------------------
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
    The mean is over the tags scored on the unweighted clips (the point estimate's); a resample in
    which one of them has no positive or no negative weight scores NaN (`draw_resamples` never
    gives such a resample).
    """
    probs = np.asarray(probs, dtype=np.float64)
    positive = np.asarray(targets) > 0
    weights = np.atleast_2d(np.asarray(weights, dtype=np.float32))
    if probs.ndim != 2 or positive.shape != probs.shape or weights.shape[1] != probs.shape[0]:
        raise ValueError(f"macro_scores: probs {probs.shape}, targets {positive.shape}, weights {weights.shape}")
    tags = np.flatnonzero(scored_tags(positive))
    roc_sum = np.zeros(weights.shape[0])
    ap_sum = np.zeros(weights.shape[0])
    for tag in tags:
        roc, ap, _ = _tag_scores(probs[:, tag], positive[:, tag], weights)
        roc_sum += roc  # NaN where the resample cannot score the tag: the whole resample is then NaN
        ap_sum += ap
    if len(tags) == 0:
        nan = np.full(weights.shape[0], np.nan)
        return {"roc_auc": nan, "pr_auc": nan.copy()}
    return {"roc_auc": roc_sum / len(tags), "pr_auc": ap_sum / len(tags)}


def _tag_influence(scores: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """d ROC-AUC / d w_k and d AP / d w_k of one tag at unit weights: two (N,) arrays.

    With tie groups g of distinct scores, P positives, N negatives, TP_g / FP_g the positives /
    negatives scoring at least group g's score, T_g = TP_g + FP_g and dTP_g the positives in g:

    * ROC-AUC = sum over positives i of u_i / (P N), u_i = negatives below i + half those tied
      with it; for a positive k, d/dw_k = (u_k / N - AUC) / P; for a negative k with v_k =
      positives above it + half those tied, d/dw_k = (v_k / P - AUC) / N;
    * AP = sum_g dTP_g TP_g / T_g / P; for a positive k in group h, d/dw_k = (TP_h / T_h - AP +
      sum over groups g at or below h of dTP_g FP_g / T_g^2) / P; for a negative k in group h,
      d/dw_k = -(sum over groups g at or below h of dTP_g TP_g / T_g^2) / P.

    Both metrics are unchanged when every weight is scaled, so the influences sum to zero.
    """
    _, group = np.unique(scores, return_inverse=True)  # group index, ascending score
    pos_in = np.bincount(group, weights=positive.astype(np.float64))
    all_in = np.bincount(group).astype(np.float64)
    neg_in = all_in - pos_in
    n_pos, n_neg = pos_in.sum(), neg_in.sum()
    neg_below = np.cumsum(neg_in) - neg_in  # negatives in lower groups
    pos_above = n_pos - np.cumsum(pos_in)  # positives in higher groups
    u = neg_below + 0.5 * neg_in
    v = pos_above + 0.5 * pos_in
    auc = float((pos_in * u).sum() / (n_pos * n_neg))
    d_roc = np.where(positive, (u[group] / n_neg - auc) / n_pos, (v[group] / n_pos - auc) / n_neg)

    tp = n_pos - (np.cumsum(pos_in) - pos_in)  # positives scoring at least the group's score
    total = (n_pos + n_neg) - (np.cumsum(all_in) - all_in)
    fp = total - tp
    precision = tp / total
    ap = float((pos_in * precision).sum() / n_pos)
    at_or_below_fp = np.cumsum(pos_in * fp / total**2)  # sum over groups with a score <= the group's
    at_or_below_tp = np.cumsum(pos_in * tp / total**2)
    d_ap = np.where(positive, (precision[group] - ap + at_or_below_fp[group]) / n_pos, -at_or_below_tp[group] / n_pos)
    return d_roc, d_ap


def macro_influence(probs: np.ndarray, targets: np.ndarray) -> dict[str, np.ndarray]:
    """Each clip's empirical influence on the macro ROC-AUC and PR-AUC: {"roc_auc": (N,), "pr_auc": (N,)}.

    The derivative of the macro metric (mean over the scored tags) with respect to the clip's
    weight, at unit weights (the infinitesimal jackknife; see `_tag_influence`).
    """
    probs = np.asarray(probs, dtype=np.float64)
    positive = np.asarray(targets) > 0
    tags = np.flatnonzero(scored_tags(positive))
    roc = np.zeros(probs.shape[0])
    ap = np.zeros(probs.shape[0])
    for tag in tags:
        d_roc, d_ap = _tag_influence(probs[:, tag], positive[:, tag])
        roc += d_roc
        ap += d_ap
    count = max(len(tags), 1)
    return {"roc_auc": roc / count, "pr_auc": ap / count}


# --------------------------------------------------------------------------------------------
# Intervals and differences
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Interval:
    """A BCa interval of an estimate; `low`/`high` NaN and `reason` set when it is not published."""

    low: float
    high: float
    reason: str | None = None
    z0: float = float("nan")
    acceleration: float = float("nan")

    @property
    def published(self) -> bool:
        return self.reason is None


def acceleration(influence: np.ndarray) -> float:
    """BCa's acceleration from empirical influence values: sum(U^3) / (6 sum(U^2)^(3/2)) (0 when all are 0)."""
    u = np.asarray(influence, dtype=np.float64)
    u = u - u.mean()  # exactly centred (the closed forms are, up to rounding)
    squares = float((u**2).sum())
    return 0.0 if squares == 0.0 else float((u**3).sum() / (6.0 * squares**1.5))


def _finite(samples) -> np.ndarray:
    samples = np.asarray(samples, dtype=np.float64)
    return samples[np.isfinite(samples)]


def _z0(samples: np.ndarray, point: float) -> float:
    """Phi^-1 of the share of resamples below `point` (ties count half); +-inf when all lie on one side."""
    share = (float((samples < point).sum()) + 0.5 * float((samples == point).sum())) / samples.size
    if share <= 0.0:
        return float("-inf")
    if share >= 1.0:
        return float("inf")
    return _NORMAL.inv_cdf(share)


def bca_interval(samples: np.ndarray, point: float, influence: np.ndarray, level: float = LEVEL) -> Interval:
    """The BCa interval of `point` from its resampled values and the clips' influence (module docstring)."""
    samples = _finite(samples)
    if samples.size == 0 or not np.isfinite(point):
        return Interval(float("nan"), float("nan"), "no resample could be scored")
    z0 = _z0(samples, point)
    accel = acceleration(influence)
    if not np.isfinite(z0):
        side = "above" if z0 < 0 else "below"
        return Interval(float("nan"), float("nan"), f"every resample scores {side} the estimate, so no interval "
                        "around it can be read off them", z0, accel)
    ends = []
    for tail in ((1 - level) / 2, (1 + level) / 2):
        t = z0 + _NORMAL.inv_cdf(tail)
        if 1 - accel * t <= 0:
            return Interval(float("nan"), float("nan"), f"the resampled values are too skewed for a BCa interval "
                            f"(acceleration {accel:.3g})", z0, accel)
        ends.append(_NORMAL.cdf(z0 + t / (1 - accel * t)))
    low, high = (float(v) for v in np.quantile(samples, ends))
    if not low <= point <= high:
        below = float((samples < point).mean())
        return Interval(float("nan"), float("nan"), f"its BCa interval [{low:.4f}, {high:.4f}] would exclude the "
                        f"estimate {point:.4f} ({below:.0%} of the resamples lie below it)", z0, accel)
    return Interval(low, high, None, z0, accel)


def bca_p_value(samples: np.ndarray, point: float, influence: np.ndarray, null: float = 0.0) -> float:
    """Two-sided p-value of "the statistic is `null`" by inverting the BCa interval (module docstring); NaN when the
    BCa interval is undefined."""
    samples = _finite(samples)
    if samples.size == 0 or not np.isfinite(point):
        return float("nan")
    z0 = _z0(samples, point)
    if not np.isfinite(z0):
        return float("nan")
    accel = acceleration(influence)
    n = samples.size
    share = (float((samples < null).sum()) + 0.5 * float((samples == null).sum()) + 0.5) / (n + 1)
    w = _NORMAL.inv_cdf(share) - z0
    floor = min(1.0, 2.0 / (n + 1))
    if 1 + accel * w <= 0:  # beyond every level the BCa map reaches: outside every interval
        return floor
    z = w / (1 + accel * w) - z0
    return float(max(floor, min(1.0, 2 * _NORMAL.cdf(-abs(z)))))


@dataclass(frozen=True)
class Difference:
    """B - A for one metric: the point difference, its paired BCa interval and p-value (`reason`: why no interval)."""

    value: float
    low: float
    high: float
    p_value: float
    reason: str | None = None

    @property
    def published(self) -> bool:
        return self.reason is None

    @property
    def separates(self) -> bool:
        """True when the published interval excludes 0."""
        return self.published and (self.low > 0 or self.high < 0)


def paired_difference(samples_a: np.ndarray, samples_b: np.ndarray, point_a: float, point_b: float,
                      influence_a: np.ndarray, influence_b: np.ndarray, level: float = LEVEL) -> Difference:
    """B - A from per-resample scores of A and B computed on the same resamples, and their clips' influence."""
    d = np.asarray(samples_b, dtype=np.float64) - np.asarray(samples_a, dtype=np.float64)
    value = float(point_b - point_a)
    influence = np.asarray(influence_b, dtype=np.float64) - np.asarray(influence_a, dtype=np.float64)
    interval = bca_interval(d, value, influence, level)
    return Difference(value, interval.low, interval.high, bca_p_value(d, value, influence), interval.reason)


def bootstrap_samples(runs_probs: list[np.ndarray], targets: np.ndarray, n_resamples: int = DEFAULT_RESAMPLES,
                      seed: int = DEFAULT_SEED) -> list[dict[str, np.ndarray]]:
    """Per-resample macro scores of several runs on the same test clips, all on the same `draw_resamples`.

    Raises `BootstrapUnavailable` when the test set is too small for them (see `draw_resamples`).
    """
    n_clips = np.asarray(targets).shape[0]
    weights = resample_weights(draw_resamples(targets, n_resamples, seed), n_clips)
    return [macro_scores(probs, targets, weights) for probs in runs_probs]
