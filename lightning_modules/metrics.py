"""Clip-level tagging metrics and the paper's per-tag "equal error" thresholds (paper section 4.6).

A MagnaTagATune clip is cut into several segments and every segment is one sample for the
network. Evaluation is per clip: :class:`ClipPredictions` collects segment probabilities during
validation/test, removes duplicates (the default ``DistributedSampler`` pads the last batch by
repeating samples) and averages the segment probabilities of each clip. The functions below then
score the clip-level probabilities:

* :func:`evaluable_tags` -- which tags have both a positive and a negative clip;
* :func:`tagging_metrics` -- macro/per-tag ROC-AUC and PR-AUC (exact, no binning), and, given
  thresholds, per-tag and macro TPR/FPR as in the paper's Table 4;
* :func:`equal_error_thresholds` -- per tag, the threshold where TPR = 1 - FPR (the intersection
  of the TPR-vs-threshold and specificity-vs-threshold curves of the paper's Figure 3);
* :func:`threshold_fallbacks` -- which of those thresholds fell back to ``DEFAULT_THRESHOLD``
  because the tag had no positive (or no negative) clip to choose one from; the record travels
  with the thresholds (the module's ``threshold_fallback`` buffer, per_tag.csv, figures, ``--tag``),
  so a 0.5 that was never chosen is never shown as if it had been;
* :func:`rates_at_thresholds` -- per-tag TPR and FPR when "positive iff prob >= threshold".

Tags that have no positive (or no negative) clip cannot be scored: torchmetrics would give them
an AUROC of 0 and scikit-learn NaN. Here they are left out of every macro mean and named in
:attr:`TaggingReport.excluded_tags`; their per-tag values are NaN.

The scoring functions work on CPU copies of their inputs (they run once per epoch on at most a
few thousand clips and return Python floats or small CPU tensors).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.functional.classification import (
    binary_auroc,
    binary_average_precision,
    multilabel_auroc,
    multilabel_average_precision,
)
from torchmetrics.utilities.data import dim_zero_cat

__all__ = [
    "ClipPredictions",
    "TaggingReport",
    "evaluable_tags",
    "tagging_metrics",
    "equal_error_thresholds",
    "threshold_fallbacks",
    "fallback_states",
    "derived_fallback_record",
    "rates_at_thresholds",
]

# Threshold used for a tag that has no positive or no negative clip (no ROC curve exists).
DEFAULT_THRESHOLD = 0.5

# How a tag's threshold came about, as the int8 values of `TaggingModule.threshold_fallback`:
THRESHOLD_CHOSEN = 0  # chosen where TPR = 1 - FPR on validation
THRESHOLD_FELL_BACK = 1  # DEFAULT_THRESHOLD: validation had no positive (or no negative) clip of the tag
THRESHOLD_UNKNOWN = -1  # a checkpoint saved before the record existed, whose threshold is DEFAULT_THRESHOLD


# --------------------------------------------------------------------------------------------
# Segment -> clip aggregation
# --------------------------------------------------------------------------------------------
class ClipPredictions(Metric):
    """Collects segment-level predictions and turns them into clip-level predictions.

    States (lists of tensors, concatenated across processes with ``dist_reduce_fx="cat"``):

    * ``probs``: float32 (B, T) sigmoid probabilities of each segment;
    * ``targets``: float32 (B, T) 0/1 tag targets of each segment (kept as float so that a
      non-binary target can be detected in :meth:`compute`);
    * ``clip_index``: int64 (B,) id of the clip the segment belongs to;
    * ``segment_index``: int64 (B,) position of the segment inside its clip.

    Call :meth:`update` (not ``forward``) in every validation/test step and :meth:`compute` at
    epoch end. Under DDP, torchmetrics gathers the cat states of all ranks before
    :meth:`compute`; ranks may hold different numbers of rows (``gather_all_tensors`` pads to
    the largest rank and trims back).

    Args:
        num_tags: number of tag columns T. Recommended: when given, ``update`` checks it, and a
            rank that received no batch at all still takes part in the DDP gather with correctly
            shaped empty states. Without it, torchmetrics fills such a rank's states with a 1-D
            float tensor that cannot be gathered with the (B, T) / int64 states of the other
            ranks (the gloo process aborts).
        **kwargs: passed to ``torchmetrics.Metric``.
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = None

    def __init__(self, num_tags: int | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        if num_tags is not None and (not isinstance(num_tags, int) or num_tags < 1):
            raise ValueError(f"ClipPredictions: num_tags must be a positive int, got {num_tags!r}")
        self.num_tags = num_tags
        self.add_state("probs", default=[], dist_reduce_fx="cat")
        self.add_state("targets", default=[], dist_reduce_fx="cat")
        self.add_state("clip_index", default=[], dist_reduce_fx="cat")
        self.add_state("segment_index", default=[], dist_reduce_fx="cat")

    def update(self, probs: Tensor, targets: Tensor, clip_index: Tensor, segment_index: Tensor) -> None:
        """Adds one batch of segments.

        Args:
            probs: (B, T) sigmoid probabilities (not logits) of each segment.
            targets: (B, T) 0/1 targets of each segment (any numeric or bool dtype).
            clip_index: (B,) integer clip id of each segment.
            segment_index: (B,) integer index of each segment inside its clip.

        Only shapes and dtypes are checked here (no device synchronisation); value checks
        (probabilities in [0, 1], binary targets, equal targets within a clip) run once in
        :meth:`compute`.
        """
        if probs.ndim != 2:
            raise ValueError(f"ClipPredictions.update: probs must be (B, T), got shape {tuple(probs.shape)}")
        if targets.shape != probs.shape:
            raise ValueError(
                f"ClipPredictions.update: targets shape {tuple(targets.shape)} differs from probs shape "
                f"{tuple(probs.shape)}"
            )
        batch = probs.shape[0]
        for name, index in (("clip_index", clip_index), ("segment_index", segment_index)):
            if index.ndim != 1 or index.shape[0] != batch:
                raise ValueError(
                    f"ClipPredictions.update: {name} must be ({batch},), got shape {tuple(index.shape)}"
                )
            if index.is_floating_point() or index.is_complex() or index.dtype == torch.bool:
                raise ValueError(f"ClipPredictions.update: {name} must have an integer dtype, got {index.dtype}")
        if self.num_tags is not None and probs.shape[1] != self.num_tags:
            raise ValueError(f"ClipPredictions.update: expected {self.num_tags} tags, got {probs.shape[1]}")
        if self.probs and self.probs[0].shape[1] != probs.shape[1]:
            raise ValueError(
                f"ClipPredictions.update: got {probs.shape[1]} tags, earlier batches had {self.probs[0].shape[1]}"
            )
        self.probs.append(probs.detach().to(torch.float32))
        self.targets.append(targets.detach().to(torch.float32))
        self.clip_index.append(clip_index.detach().to(torch.int64))
        self.segment_index.append(segment_index.detach().to(torch.int64))

    def sync(
        self,
        dist_sync_fn=None,
        process_group=None,
        should_sync: bool = True,
        distributed_available=None,
    ) -> None:
        """torchmetrics ``Metric.sync``, after giving a rank without data empty states of the right
        shape and dtype (only when ``num_tags`` is known), so that the DDP gather works."""
        if should_sync and self.num_tags is not None and isinstance(self.probs, list) and not self.probs:
            self.probs.append(torch.empty((0, self.num_tags), dtype=torch.float32, device=self.device))
            self.targets.append(torch.empty((0, self.num_tags), dtype=torch.float32, device=self.device))
            self.clip_index.append(torch.empty((0,), dtype=torch.int64, device=self.device))
            self.segment_index.append(torch.empty((0,), dtype=torch.int64, device=self.device))
        super().sync(
            dist_sync_fn=dist_sync_fn,
            process_group=process_group,
            should_sync=should_sync,
            distributed_available=distributed_available,
        )

    def compute(self) -> tuple[Tensor, Tensor, Tensor]:
        """Returns ``(clip_probs (C, T) float32, clip_targets (C, T) int64, clip_ids (C,) int64)``.

        Clips are sorted by id. Rows with the same (clip_index, segment_index) are counted once
        (the first one in gathered order is kept); the probabilities of the remaining segments of
        a clip are averaged. Raises ValueError when nothing was collected, when a probability is
        outside [0, 1] or not finite (logits passed by mistake), when a target is not 0/1, or when
        the segments of one clip carry different targets.
        """
        no_data = ValueError("ClipPredictions.compute: no segments were collected (update was never called)")
        if isinstance(self.probs, list) and not self.probs:
            raise no_data
        probs = dim_zero_cat(self.probs)
        targets = dim_zero_cat(self.targets)
        clip_index = dim_zero_cat(self.clip_index)
        segment_index = dim_zero_cat(self.segment_index)
        if probs.shape[0] == 0:
            raise no_data

        if not bool(torch.isfinite(probs).all()) or bool((probs < 0).any()) or bool((probs > 1).any()):
            raise ValueError(
                "ClipPredictions.compute: probabilities must be finite and in [0, 1] "
                "(were logits passed instead of sigmoid outputs?)"
            )
        if not bool(((targets == 0) | (targets == 1)).all()):
            raise ValueError("ClipPredictions.compute: targets must be 0 or 1")

        num_rows = probs.shape[0]
        rows = torch.arange(num_rows, device=probs.device)

        # 1. De-duplicate by (clip_index, segment_index): keep the first row of every pair.
        pairs = torch.stack([clip_index, segment_index], dim=1)
        _, pair_inverse = torch.unique(pairs, dim=0, return_inverse=True)
        num_pairs = int(pair_inverse.max()) + 1
        first_row = torch.full((num_pairs,), num_rows, dtype=torch.int64, device=probs.device)
        first_row = first_row.scatter_reduce(0, pair_inverse, rows, reduce="amin", include_self=True)
        probs = probs[first_row]
        targets = targets[first_row]
        clip_index = clip_index[first_row]

        # 2. Average the segment probabilities of every clip.
        clip_ids, clip_inverse = torch.unique(clip_index, sorted=True, return_inverse=True)
        num_clips = clip_ids.shape[0]
        counts = torch.bincount(clip_inverse, minlength=num_clips).to(probs.dtype)
        sums = torch.zeros((num_clips, probs.shape[1]), dtype=probs.dtype, device=probs.device)
        sums.index_add_(0, clip_inverse, probs)
        clip_probs = sums / counts.unsqueeze(1)

        # 3. Targets: take one segment per clip, then check that all segments agree with it.
        seg_rows = torch.arange(probs.shape[0], device=probs.device)
        clip_first = torch.full((num_clips,), probs.shape[0], dtype=torch.int64, device=probs.device)
        clip_first = clip_first.scatter_reduce(0, clip_inverse, seg_rows, reduce="amin", include_self=True)
        clip_targets = targets[clip_first]
        mismatch = (targets != clip_targets[clip_inverse]).any(dim=1)
        if bool(mismatch.any()):
            bad = torch.unique(clip_index[mismatch])[:10].tolist()
            raise ValueError(
                f"ClipPredictions.compute: segments of the same clip have different targets (clip ids {bad})"
            )
        return clip_probs, clip_targets.to(torch.int64), clip_ids


# --------------------------------------------------------------------------------------------
# Input checks shared by the scoring functions
# --------------------------------------------------------------------------------------------
def _as_cpu_inputs(probs: Tensor, targets: Tensor, where: str) -> tuple[Tensor, Tensor]:
    """Validates (N, T) probabilities and 0/1 targets; returns CPU copies (probs keep their float dtype)."""
    if probs.ndim != 2:
        raise ValueError(f"{where}: probs must be (N, T), got shape {tuple(probs.shape)}")
    if targets.shape != probs.shape:
        raise ValueError(f"{where}: targets shape {tuple(targets.shape)} differs from probs shape {tuple(probs.shape)}")
    if probs.shape[0] == 0:
        raise ValueError(f"{where}: no samples")
    probs = probs.detach().cpu()
    if not probs.is_floating_point():
        raise ValueError(f"{where}: probs must be floating point, got {probs.dtype}")
    if not bool(torch.isfinite(probs).all()) or bool((probs < 0).any()) or bool((probs > 1).any()):
        raise ValueError(f"{where}: probabilities must be finite and in [0, 1] (were logits passed?)")
    targets = targets.detach().cpu()
    if not bool(((targets == 0) | (targets == 1)).all()):
        raise ValueError(f"{where}: targets must be 0 or 1")
    return probs, targets.to(torch.int64)


def _as_cpu_thresholds(thresholds: Tensor | Sequence[float], num_tags: int, where: str) -> Tensor:
    thresholds = torch.as_tensor(thresholds).detach().cpu()
    if thresholds.shape != (num_tags,):
        raise ValueError(f"{where}: thresholds must have shape ({num_tags},), got {tuple(thresholds.shape)}")
    if not thresholds.is_floating_point():
        thresholds = thresholds.to(torch.float64)
    if not bool(torch.isfinite(thresholds).all()):
        raise ValueError(f"{where}: thresholds must be finite")
    return thresholds


# --------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------
def evaluable_tags(targets: Tensor) -> Tensor:
    """Returns a bool (T,) mask of the tags with at least one positive and one negative sample."""
    if targets.ndim != 2:
        raise ValueError(f"evaluable_tags: targets must be (N, T), got shape {tuple(targets.shape)}")
    positive = targets != 0
    return positive.any(dim=0) & (~positive).any(dim=0)


def rates_at_thresholds(probs: Tensor, targets: Tensor, thresholds: Tensor | Sequence[float]) -> tuple[Tensor, Tensor]:
    """Per-tag true- and false-positive rates when a sample is positive iff ``prob >= threshold``.

    Args:
        probs: (N, T) probabilities in [0, 1].
        targets: (N, T) 0/1 targets.
        thresholds: (T,) one threshold per tag.

    Returns:
        ``(tpr, fpr)``, two float64 CPU tensors of shape (T,). TPR is NaN for a tag without
        positives, FPR is NaN for a tag without negatives.
    """
    probs, targets = _as_cpu_inputs(probs, targets, "rates_at_thresholds")
    thresholds = _as_cpu_thresholds(thresholds, probs.shape[1], "rates_at_thresholds")
    predicted = probs >= thresholds.unsqueeze(0)  # type promotion: compares in the wider float dtype
    actual = targets.bool()
    true_pos = (predicted & actual).sum(dim=0).to(torch.float64)
    false_pos = (predicted & ~actual).sum(dim=0).to(torch.float64)
    positives = actual.sum(dim=0).to(torch.float64)
    negatives = (~actual).sum(dim=0).to(torch.float64)
    nan = torch.full_like(true_pos, math.nan)
    tpr = torch.where(positives > 0, true_pos / positives.clamp(min=1), nan)
    fpr = torch.where(negatives > 0, false_pos / negatives.clamp(min=1), nan)
    return tpr, fpr


def equal_error_thresholds(probs: Tensor, targets: Tensor) -> Tensor:
    """Per tag, the threshold at which TPR = 1 - FPR (recall = specificity; paper section 4.6).

    Candidates are the distinct probabilities of the tag (the thresholds of its exact ROC
    curve); at candidate ``t`` a sample is positive iff ``prob >= t``. The chosen candidate
    minimises ``|TPR - (1 - FPR)|``, computed in exact integer arithmetic as
    ``|TP * N_neg + FP * N_pos - N_pos * N_neg|``. Because TPR + FPR strictly grows as the
    threshold falls, at most two candidates can tie (one on each side of the crossing); the tie
    is broken towards the LOWER threshold, i.e. the larger TPR. The returned thresholds are
    actual probability values, so :func:`rates_at_thresholds` reproduces the chosen ROC point
    exactly.

    Tags without a positive or without a negative sample have no ROC curve: their threshold is
    0.5 (``DEFAULT_THRESHOLD``); :func:`threshold_fallbacks` names them, and every place that shows a
    threshold marks those.

    Args:
        probs: (N, T) probabilities in [0, 1].
        targets: (N, T) 0/1 targets.

    Returns:
        (T,) CPU tensor with the dtype of ``probs``.
    """
    probs, targets = _as_cpu_inputs(probs, targets, "equal_error_thresholds")
    num_samples, num_tags = probs.shape
    sorted_probs, order = torch.sort(probs, dim=0, descending=True, stable=True)
    sorted_targets = torch.gather(targets, 0, order)
    true_pos = torch.cumsum(sorted_targets, dim=0)  # (N, T) TP when the threshold is sorted_probs[i]
    ranks = torch.arange(1, num_samples + 1, dtype=torch.int64).unsqueeze(1)
    false_pos = ranks - true_pos
    positives = true_pos[-1]  # (T,)
    negatives = num_samples - positives
    # A row is a valid cut only at the last occurrence of a value (ties are all in or all out).
    last_of_value = torch.ones_like(sorted_probs, dtype=torch.bool)
    last_of_value[:-1] = sorted_probs[:-1] != sorted_probs[1:]
    gap = (true_pos * negatives + false_pos * positives - positives * negatives).abs()
    gap = torch.where(last_of_value, gap, torch.iinfo(torch.int64).max)
    # argmin returns the first minimum; search the reversed rows so ties go to the lower threshold.
    best_row = num_samples - 1 - torch.argmin(torch.flip(gap, dims=[0]), dim=0)
    thresholds = sorted_probs[best_row, torch.arange(num_tags)]
    default = torch.full_like(thresholds, DEFAULT_THRESHOLD)
    return torch.where(threshold_fallbacks(targets), default, thresholds)


def threshold_fallbacks(targets: Tensor) -> Tensor:
    """Bool (T,): the tags whose :func:`equal_error_thresholds` fall back to ``DEFAULT_THRESHOLD`` on these targets
    (no positive or no negative sample, hence no ROC curve to choose a threshold on)."""
    return ~evaluable_tags(targets)


def derived_fallback_record(thresholds: Tensor) -> Tensor:
    """The int8 record for thresholds saved without one: a threshold other than ``DEFAULT_THRESHOLD`` was chosen
    (a fallback is exactly that value), one equal to it is ``THRESHOLD_UNKNOWN`` (a chosen one can equal it)."""
    thresholds = torch.as_tensor(thresholds)
    return torch.where(thresholds == DEFAULT_THRESHOLD, THRESHOLD_UNKNOWN, THRESHOLD_CHOSEN).to(torch.int8)


def fallback_states(record) -> list[bool | None]:
    """The per-tag record (``THRESHOLD_*`` codes, or bools) as True (fell back), False (chosen) or None (unknown)."""
    values = record.tolist() if isinstance(record, Tensor) else list(record)
    out: list[bool | None] = []
    for value in values:
        if value is None or (not isinstance(value, bool) and int(value) == THRESHOLD_UNKNOWN):
            out.append(None)
        else:
            out.append(bool(value))
    return out


@dataclass
class TaggingReport:
    """Clip-level tagging scores.

    Attributes:
        tag_names: the T tag names, in column order.
        n_clips: number of clips scored.
        roc_auc: macro ROC-AUC over the evaluable tags (exact, no threshold binning).
        pr_auc: macro PR-AUC (average precision) over the evaluable tags.
        per_tag_roc_auc: T values; NaN for excluded tags.
        per_tag_pr_auc: T values; NaN for excluded tags.
        positives: T counts of positive clips per tag.
        excluded_tags: names of the tags left out of every macro mean (no positive or no
            negative clip).
        thresholds: the T thresholds used for TPR/FPR, or None when none were given.
        threshold_fell_back: per tag, True when its threshold is ``DEFAULT_THRESHOLD`` because
            validation had no positive (or no negative) clip to choose one, False when it was
            chosen, None when unknown (a checkpoint from before the record); None when no thresholds
            or no record were given.
        per_tag_tpr / per_tag_fpr: T rates at those thresholds (NaN for excluded tags), or None.
        tpr / fpr: their means over the evaluable tags (the paper's Table 4), or None.
    """

    tag_names: list[str]
    n_clips: int
    roc_auc: float
    pr_auc: float
    per_tag_roc_auc: list[float]
    per_tag_pr_auc: list[float]
    positives: list[int]
    excluded_tags: list[str]
    thresholds: list[float] | None = None
    threshold_fell_back: list[bool | None] | None = None
    per_tag_tpr: list[float] | None = None
    per_tag_fpr: list[float] | None = None
    tpr: float | None = None
    fpr: float | None = None

    def to_dict(self) -> dict:
        """All fields as plain Python values, strict-JSON-able: NaN becomes None."""

        def clean(value):
            if isinstance(value, float) and math.isnan(value):
                return None
            if isinstance(value, list):
                return [clean(item) for item in value]
            return value

        return {key: clean(value) for key, value in asdict(self).items()}

    def scalars(self, prefix: str = "") -> dict[str, float]:
        """The macro numbers, for ``LightningModule.log_dict``: roc_auc, pr_auc and, when
        thresholds were given, tpr and fpr; keys are prefixed with ``prefix``."""
        out = {f"{prefix}roc_auc": self.roc_auc, f"{prefix}pr_auc": self.pr_auc}
        if self.tpr is not None and self.fpr is not None:
            out[f"{prefix}tpr"] = self.tpr
            out[f"{prefix}fpr"] = self.fpr
        return out


def tagging_metrics(
    probs: Tensor,
    targets: Tensor,
    tag_names: Sequence[str],
    thresholds: Tensor | Sequence[float] | None = None,
    threshold_fell_back: Tensor | Sequence | None = None,
) -> TaggingReport:
    """Scores clip-level probabilities against 0/1 targets.

    ROC-AUC and PR-AUC per tag come from torchmetrics ``multilabel_auroc`` /
    ``multilabel_average_precision`` with ``average=None, thresholds=None`` (exact; equal to
    scikit-learn's ``roc_auc_score`` / ``average_precision_score``), computed on the evaluable
    tags only. Tags without a positive or without a negative clip are left out of the macro
    means, named in ``excluded_tags`` and get NaN per-tag values.

    Args:
        probs: (N, T) clip probabilities in [0, 1].
        targets: (N, T) 0/1 clip targets.
        tag_names: T tag names.
        thresholds: optional (T,) per-tag thresholds (e.g. from :func:`equal_error_thresholds`
            on the validation set); if given, TPR and FPR (positive iff prob >= threshold) are
            added per tag and as means over the evaluable tags.
        threshold_fell_back: optional (T,) record of which thresholds fell back (``THRESHOLD_*``
            codes or bools; see :func:`fallback_states`), kept in the report with the thresholds.

    Raises:
        ValueError: on bad shapes/values, or when no tag is evaluable.
    """
    probs, targets = _as_cpu_inputs(probs, targets, "tagging_metrics")
    num_samples, num_tags = probs.shape
    tag_names = [str(name) for name in tag_names]
    if len(tag_names) != num_tags:
        raise ValueError(f"tagging_metrics: got {len(tag_names)} tag names for {num_tags} tag columns")
    mask = evaluable_tags(targets)
    excluded = [name for name, ok in zip(tag_names, mask.tolist()) if not ok]
    if not bool(mask.any()):
        raise ValueError(
            f"tagging_metrics: no tag has both a positive and a negative among the {num_samples} clips; "
            "ROC-AUC is undefined for every tag"
        )
    kept = torch.nonzero(mask).squeeze(1)
    sub_probs, sub_targets = probs[:, kept], targets[:, kept]
    if kept.numel() == 1:  # torchmetrics' multilabel functions need at least 2 labels
        roc = binary_auroc(sub_probs[:, 0], sub_targets[:, 0], thresholds=None).reshape(1)
        ap = binary_average_precision(sub_probs[:, 0], sub_targets[:, 0], thresholds=None).reshape(1)
    else:
        roc = multilabel_auroc(sub_probs, sub_targets, num_labels=kept.numel(), average=None, thresholds=None)
        ap = multilabel_average_precision(
            sub_probs, sub_targets, num_labels=kept.numel(), average=None, thresholds=None
        )
    per_tag_roc = torch.full((num_tags,), math.nan, dtype=torch.float64)
    per_tag_ap = torch.full((num_tags,), math.nan, dtype=torch.float64)
    per_tag_roc[kept] = roc.to(torch.float64)
    per_tag_ap[kept] = ap.to(torch.float64)

    report = TaggingReport(
        tag_names=tag_names,
        n_clips=num_samples,
        roc_auc=float(per_tag_roc[kept].mean()),
        pr_auc=float(per_tag_ap[kept].mean()),
        per_tag_roc_auc=per_tag_roc.tolist(),
        per_tag_pr_auc=per_tag_ap.tolist(),
        positives=targets.sum(dim=0).tolist(),
        excluded_tags=excluded,
    )
    if thresholds is not None:
        thresholds = _as_cpu_thresholds(thresholds, num_tags, "tagging_metrics")
        tpr, fpr = rates_at_thresholds(probs, targets, thresholds)
        nan = torch.full_like(tpr, math.nan)
        tpr = torch.where(mask, tpr, nan)
        fpr = torch.where(mask, fpr, nan)
        report.thresholds = thresholds.to(torch.float64).tolist()
        if threshold_fell_back is not None:
            states = fallback_states(threshold_fell_back)
            if len(states) != num_tags:
                raise ValueError(f"tagging_metrics: {len(states)} threshold fallback states for {num_tags} tags")
            report.threshold_fell_back = states
        report.per_tag_tpr = tpr.tolist()
        report.per_tag_fpr = fpr.tolist()
        report.tpr = float(tpr[kept].mean())
        report.fpr = float(fpr[kept].mean())
    return report
