"""Tests for lightning_modules.metrics: clip aggregation, AUC metrics, equal-error thresholds."""

from __future__ import annotations

import json
import math
import socket
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from lightning_modules.metrics import (
    ClipPredictions,
    TaggingReport,
    equal_error_thresholds,
    evaluable_tags,
    rates_at_thresholds,
    tagging_metrics,
)


def _random_case(seed: int = 0, n: int = 300, t: int = 8):
    """Random (n, t) probabilities and targets correlated with them, with ties, plus a tag with
    no positives (column 2) and a tag with only positives (column 5) when t > 5."""
    gen = torch.Generator().manual_seed(seed)
    targets = (torch.rand(n, t, generator=gen) < 0.3).long()
    noise = torch.rand(n, t, generator=gen)
    probs = (0.6 * noise + 0.4 * targets).clamp(0, 1)
    probs = torch.round(probs * 50) / 50  # introduce ties
    if t > 5:
        targets[:, 2] = 0
        targets[:, 5] = 1
    return probs, targets


# ---------------------------------------------------------------- evaluable_tags / tagging_metrics
def test_evaluable_tags_mask():
    targets = torch.tensor([[0, 1, 1, 0], [0, 1, 0, 1], [0, 1, 1, 0]])
    assert evaluable_tags(targets).tolist() == [False, False, True, True]


def test_tagging_metrics_matches_sklearn_and_names_excluded_tags():
    probs, targets = _random_case()
    names = [f"tag{i}" for i in range(probs.shape[1])]
    report = tagging_metrics(probs, targets, names)
    assert report.excluded_tags == ["tag2", "tag5"]
    assert report.n_clips == probs.shape[0]
    assert report.positives == targets.sum(0).tolist()
    p, y = probs.double().numpy(), targets.numpy()
    kept = [i for i in range(p.shape[1]) if i not in (2, 5)]
    for i in range(p.shape[1]):
        if i in kept:
            assert report.per_tag_roc_auc[i] == pytest.approx(roc_auc_score(y[:, i], p[:, i]), abs=1e-6)
            assert report.per_tag_pr_auc[i] == pytest.approx(average_precision_score(y[:, i], p[:, i]), abs=1e-6)
        else:
            assert math.isnan(report.per_tag_roc_auc[i]) and math.isnan(report.per_tag_pr_auc[i])
    assert report.roc_auc == pytest.approx(roc_auc_score(y[:, kept], p[:, kept], average="macro"), abs=1e-6)
    assert report.pr_auc == pytest.approx(average_precision_score(y[:, kept], p[:, kept], average="macro"), abs=1e-6)
    # torchmetrics alone would score the no-positive tag 0 and count it in the macro mean
    from torchmetrics.functional.classification import multilabel_auroc

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "No positive/negative samples in targets"
        naive = multilabel_auroc(probs, targets, num_labels=probs.shape[1], average=None, thresholds=None)
    assert naive[2].item() == 0.0
    assert report.thresholds is None and report.tpr is None and report.fpr is None


def test_tagging_metrics_single_evaluable_tag():
    probs, targets = _random_case(seed=1, t=3)
    targets[:, 0] = 0
    targets[:, 2] = 1
    report = tagging_metrics(probs, targets, ["a", "b", "c"])
    assert report.excluded_tags == ["a", "c"]
    expected = roc_auc_score(targets[:, 1].numpy(), probs[:, 1].double().numpy())
    assert report.roc_auc == pytest.approx(expected, abs=1e-6)
    assert report.per_tag_roc_auc[1] == pytest.approx(expected, abs=1e-6)


def test_tagging_metrics_all_excluded_raises():
    probs = torch.rand(5, 2)
    targets = torch.tensor([[0, 1]] * 5)
    with pytest.raises(ValueError, match="no tag has both"):
        tagging_metrics(probs, targets, ["a", "b"])


def test_tagging_metrics_rejects_logits_and_bad_names():
    probs, targets = _random_case(t=3)
    with pytest.raises(ValueError, match="logits"):
        tagging_metrics(probs * 4 - 2, targets, ["a", "b", "c"])
    with pytest.raises(ValueError, match="tag names"):
        tagging_metrics(probs, targets, ["a", "b"])
    with pytest.raises(ValueError, match="0 or 1"):
        tagging_metrics(probs, targets * 2, ["a", "b", "c"])


def test_tagging_metrics_with_thresholds_and_json():
    probs, targets = _random_case(seed=3)
    names = [f"tag{i}" for i in range(probs.shape[1])]
    thresholds = torch.full((probs.shape[1],), 0.5)
    report = tagging_metrics(probs, targets, names, thresholds=thresholds)
    p, y = probs.numpy(), targets.numpy().astype(bool)
    kept = [i for i in range(p.shape[1]) if i not in (2, 5)]
    exp_tpr = [((p[:, i] >= 0.5) & y[:, i]).sum() / y[:, i].sum() for i in kept]
    exp_fpr = [((p[:, i] >= 0.5) & ~y[:, i]).sum() / (~y[:, i]).sum() for i in kept]
    assert [report.per_tag_tpr[i] for i in kept] == pytest.approx(exp_tpr, abs=1e-12)
    assert [report.per_tag_fpr[i] for i in kept] == pytest.approx(exp_fpr, abs=1e-12)
    assert report.tpr == pytest.approx(np.mean(exp_tpr), abs=1e-12)
    assert report.fpr == pytest.approx(np.mean(exp_fpr), abs=1e-12)
    assert math.isnan(report.per_tag_tpr[2]) and math.isnan(report.per_tag_fpr[5])
    as_dict = report.to_dict()
    text = json.dumps(as_dict, allow_nan=False)  # strict JSON: NaN became null
    back = json.loads(text)
    assert back["per_tag_roc_auc"][2] is None and back["excluded_tags"] == ["tag2", "tag5"]
    assert back["tpr"] == pytest.approx(report.tpr)
    assert report.scalars("val/") == {
        "val/roc_auc": report.roc_auc,
        "val/pr_auc": report.pr_auc,
        "val/tpr": report.tpr,
        "val/fpr": report.fpr,
    }
    assert isinstance(report, TaggingReport)


# ---------------------------------------------------------------- rates / thresholds
def test_rates_at_thresholds_by_hand():
    probs = torch.tensor([[0.9, 0.2], [0.6, 0.2], [0.4, 0.7], [0.1, 0.1]])
    targets = torch.tensor([[1, 0], [0, 0], [1, 0], [0, 0]])
    tpr, fpr = rates_at_thresholds(probs, targets, torch.tensor([0.6, 0.2]))
    # tag 0: predicted {0.9, 0.6} -> TP 1 of 2, FP 1 of 2. Tag 1: no positives -> TPR NaN;
    # predicted {0.2, 0.2, 0.7} (>= is inclusive) -> FPR 3/4.
    assert tpr[0].item() == 0.5 and fpr[0].item() == 0.5
    assert math.isnan(tpr[1].item()) and fpr[1].item() == 0.75
    with pytest.raises(ValueError, match="thresholds must have shape"):
        rates_at_thresholds(probs, targets, torch.tensor([0.5]))


def test_equal_error_threshold_exact_crossing():
    # 4 positives, 4 negatives: .9+ .8+ .7- .6+ .55- .3+ .2- .1-.
    # Cut at 0.6 (positive iff >= 0.6): TP 3, FP 1 -> TPR 0.75 = 1 - FPR (0.25) exactly.
    # Neighbours: cut 0.7 -> TPR+FPR-1 = -0.25; cut 0.55 -> +0.25. So the answer is 0.6.
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.55, 0.3, 0.2, 0.1])
    labels = torch.tensor([1, 1, 0, 1, 0, 1, 0, 0])
    thr = equal_error_thresholds(scores.unsqueeze(1), labels.unsqueeze(1))
    assert thr.tolist() == [pytest.approx(0.6)]
    assert thr.dtype == scores.dtype
    tpr, fpr = rates_at_thresholds(scores.unsqueeze(1), labels.unsqueeze(1), thr)
    assert tpr.item() == 0.75 and fpr.item() == 0.25


def test_equal_error_threshold_tie_goes_to_larger_tpr_and_ties_in_scores():
    # 2 positives, 2 negatives; 0.5 is shared by one positive and one negative (they go in
    # together). Cut 0.9 -> TPR .5, FPR 0 (TPR+FPR-1 = -.5); cut 0.5 -> TPR 1, FPR .5 (+.5);
    # cut 0.1 -> +1. The two gaps of .5 tie: the rule takes the lower threshold (larger TPR).
    scores = torch.tensor([[0.9], [0.5], [0.5], [0.1]])
    labels = torch.tensor([[1], [1], [0], [0]])
    thr = equal_error_thresholds(scores, labels)
    assert thr.tolist() == [0.5]
    tpr, fpr = rates_at_thresholds(scores, labels, thr)
    assert tpr.item() == 1.0 and fpr.item() == 0.5


def test_equal_error_thresholds_vs_sklearn_roc_and_defaults():
    probs, targets = _random_case(seed=7, n=400, t=6)
    thr = equal_error_thresholds(probs, targets)
    assert thr[2].item() == 0.5 and thr[5].item() == 0.5  # non-evaluable tags
    for i in (0, 1, 3, 4):
        fpr, tpr, cuts = roc_curve(targets[:, i].numpy(), probs[:, i].numpy(), drop_intermediate=False)
        gaps = np.abs(tpr - (1 - fpr))
        best = gaps.min()
        # the chosen threshold reaches the minimal gap, with the largest TPR among minimisers
        candidates = [(tpr[k], cuts[k]) for k in range(len(cuts)) if abs(gaps[k] - best) < 1e-12]
        expected_cut = max(candidates)[1]
        assert thr[i].item() == pytest.approx(float(expected_cut), abs=0)
    tpr, fpr = rates_at_thresholds(probs, targets, thr)
    kept = torch.tensor([0, 1, 3, 4])
    assert torch.all((tpr[kept] - (1 - fpr[kept])).abs() < 0.1)


# ---------------------------------------------------------------- ClipPredictions
def _clip_case():
    """3 clips x 4 segments (2 tags) with known probabilities; returns rows and expected means."""
    clip_ids = [30, 10, 20]
    seg_probs = {
        10: [[0.1, 0.9], [0.3, 0.7], [0.5, 0.5], [0.7, 0.3]],  # mean [0.4, 0.6]
        20: [[0.0, 1.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0]],  # mean [0.5, 0.5]
        30: [[0.2, 0.2], [0.2, 0.4], [0.2, 0.6], [0.2, 0.8]],  # mean [0.2, 0.5]
    }
    clip_targets = {10: [1, 0], 20: [0, 1], 30: [1, 1]}
    rows = [(c, s, seg_probs[c][s], clip_targets[c]) for c in clip_ids for s in range(4)]
    expected = torch.tensor([[0.4, 0.6], [0.5, 0.5], [0.2, 0.5]])
    return rows, expected, torch.tensor([[1, 0], [0, 1], [1, 1]])


def _batch(rows):
    return (
        torch.tensor([r[2] for r in rows]),
        torch.tensor([r[3] for r in rows]),
        torch.tensor([r[0] for r in rows]),
        torch.tensor([r[1] for r in rows]),
    )


def test_clip_predictions_shuffled_with_duplicates():
    rows, expected, expected_targets = _clip_case()
    gen = torch.Generator().manual_seed(0)
    order = torch.randperm(len(rows), generator=gen).tolist()
    shuffled = [rows[i] for i in order] + [rows[0], rows[5], rows[5]]  # DistributedSampler-like padding
    metric = ClipPredictions()
    for start in range(0, len(shuffled), 5):
        metric.update(*_batch(shuffled[start : start + 5]))
    clip_probs, clip_targets, clip_ids = metric.compute()
    assert clip_ids.tolist() == [10, 20, 30]
    torch.testing.assert_close(clip_probs, expected, atol=1e-6, rtol=0)
    assert torch.equal(clip_targets, expected_targets)
    metric.reset()
    with pytest.raises(ValueError, match="no segments"), pytest.warns(UserWarning, match="before the ``update``"):
        metric.compute()


def test_clip_predictions_duplicates_change_result_if_not_removed():
    """A duplicated segment must not shift the mean: the case is built so that it would."""
    rows, expected, _ = _clip_case()
    metric = ClipPredictions()
    metric.update(*_batch(rows + [rows[0]] * 3))  # clip 30 segment 0 repeated
    clip_probs, _, _ = metric.compute()
    torch.testing.assert_close(clip_probs, expected, atol=1e-6, rtol=0)


def test_clip_predictions_target_mismatch_and_input_checks():
    rows, _, _ = _clip_case()
    probs, targets, clips, segs = _batch(rows)
    targets = targets.clone()
    targets[1, 0] = 1 - targets[1, 0]  # clip 30, segment 1 differs
    metric = ClipPredictions()
    metric.update(probs, targets, clips, segs)
    with pytest.raises(ValueError, match=r"different targets \(clip ids \[30\]\)"):
        metric.compute()
    metric = ClipPredictions()
    metric.update(probs * 10 - 5, _batch(rows)[1], clips, segs)
    with pytest.raises(ValueError, match="logits"):
        metric.compute()
    with pytest.raises(ValueError, match="clip_index must be"):
        ClipPredictions().update(probs, targets, clips[:-1], segs)
    with pytest.raises(ValueError, match="integer dtype"):
        ClipPredictions().update(probs, targets, clips.float(), segs)
    with pytest.raises(ValueError, match="expected 3 tags, got 2"):
        ClipPredictions(num_tags=3).update(probs, targets, clips, segs)


def test_clip_predictions_feeds_tagging_metrics():
    gen = torch.Generator().manual_seed(5)
    n_clips, n_segs, n_tags = 40, 3, 4
    clip_targets = (torch.rand(n_clips, n_tags, generator=gen) < 0.4).long()
    seg_probs = torch.rand(n_clips, n_segs, n_tags, generator=gen)
    metric = ClipPredictions()
    for s in range(n_segs):
        metric.update(seg_probs[:, s], clip_targets, torch.arange(n_clips) + 100, torch.full((n_clips,), s))
    clip_probs, targets, ids = metric.compute()
    torch.testing.assert_close(clip_probs, seg_probs.mean(1), atol=1e-6, rtol=0)
    report = tagging_metrics(clip_probs, targets, list("abcd"))
    expected = roc_auc_score(clip_targets.numpy(), seg_probs.mean(1).double().numpy(), average="macro")
    assert report.roc_auc == pytest.approx(expected, abs=1e-6)


# ---------------------------------------------------------------- DDP (2 processes, gloo)
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ddp_worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        rows, _, _ = _clip_case()
        # uneven: rank 0 gets 7 rows in 2 batches, rank 1 gets 5 rows + 2 padding duplicates
        mine = rows[:7] if rank == 0 else rows[7:] + [rows[0], rows[8]]
        metric = ClipPredictions()
        metric.update(*_batch(mine[:4]))
        metric.update(*_batch(mine[4:]))
        clip_probs, clip_targets, clip_ids = metric.compute()
        # a rank without any batch (possible with UnrepeatedDistributedSampler): needs num_tags
        sparse = ClipPredictions(num_tags=2)
        if rank == 0:
            sparse.update(*_batch(rows))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "compute called before update" on rank 1
            sparse_probs, _, sparse_ids = sparse.compute()
        torch.save(
            {
                "probs": clip_probs,
                "targets": clip_targets,
                "ids": clip_ids,
                "local_rows": len(metric.probs),
                "sparse_probs": sparse_probs,
                "sparse_ids": sparse_ids,
            },
            Path(out_dir) / f"rank{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_clip_predictions_ddp_uneven_states():
    import torch.multiprocessing as mp

    _, expected, expected_targets = _clip_case()
    with tempfile.TemporaryDirectory() as out_dir:
        mp.spawn(_ddp_worker, args=(2, _free_port(), out_dir), nprocs=2, join=True)
        for rank in range(2):
            result = torch.load(Path(out_dir) / f"rank{rank}.pt")
            assert result["ids"].tolist() == [10, 20, 30]
            torch.testing.assert_close(result["probs"], expected, atol=1e-6, rtol=0)
            assert torch.equal(result["targets"], expected_targets)
            assert result["local_rows"] == 2  # local (unsynced) list states are restored after compute
            assert result["sparse_ids"].tolist() == [10, 20, 30]
            torch.testing.assert_close(result["sparse_probs"], expected, atol=1e-6, rtol=0)
