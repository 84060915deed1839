"""The run's figures: the curves behind them are exact, and each figure shows what it claims."""

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from experiments.reporting import figures
from infrastructure.audio import SAMPLE_RATE
from lightning_modules.metrics import equal_error_thresholds, rates_at_thresholds

TAGS = ["guitar", "classical", "slow", "techno", "piano", "rock"]


def _data(seed=0, n=80):
    rng = np.random.default_rng(seed)
    targets = (rng.random((n, len(TAGS))) < 0.3).astype(np.int64)
    # informative scores for the first tags, noise for the last ones
    quality = np.linspace(2.0, 0.0, len(TAGS))
    probs = 1 / (1 + np.exp(-(quality * (2 * targets - 1) + rng.normal(size=targets.shape))))
    return torch.tensor(probs, dtype=torch.float64), torch.tensor(targets)


def _is_png(path, min_size=(300, 200)):
    with Image.open(path) as image:
        return image.format == "PNG" and image.size[0] >= min_size[0] and image.size[1] >= min_size[1]


def test_threshold_curves_match_the_rates_used_for_table_4():
    probs, targets = _data()
    for tag in range(len(TAGS)):
        thresholds, tpr, fpr = figures.threshold_curves(probs[:, tag], targets[:, tag])
        assert thresholds[0] == 0.0 and thresholds[-1] == 1.0 and np.all(np.diff(thresholds) > 0)
        expected_tpr, expected_fpr = rates_at_thresholds(
            probs[:, [tag]].repeat(1, len(thresholds)), targets[:, [tag]].repeat(1, len(thresholds)),
            torch.tensor(thresholds))
        np.testing.assert_allclose(tpr, expected_tpr.numpy(), atol=1e-12)
        np.testing.assert_allclose(fpr, expected_fpr.numpy(), atol=1e-12)


def test_roc_points_are_scikit_learns_curve():
    from sklearn.metrics import roc_auc_score, roc_curve

    probs, targets = _data(1)
    for tag in range(len(TAGS)):
        fpr, tpr = figures.roc_points(probs[:, tag], targets[:, tag])
        ref_fpr, ref_tpr, _ = roc_curve(targets[:, tag], probs[:, tag], drop_intermediate=False)
        np.testing.assert_allclose(fpr, ref_fpr, atol=1e-12)
        np.testing.assert_allclose(tpr, ref_tpr, atol=1e-12)
        assert math.isclose(np.trapezoid(tpr, fpr), roc_auc_score(targets[:, tag], probs[:, tag]), abs_tol=1e-12)


def test_tag_distribution_is_sorted_most_frequent_first(tmp_path):
    counts = [5, 40, 12, 40, 1, 7]
    figure = figures.tag_distribution_figure(TAGS, counts, n_clips=100)
    axes = figure.axes[0]
    heights = [bar.get_height() for bar in axes.patches]
    labels = [label.get_text() for label in axes.get_xticklabels()]
    assert heights == [40, 40, 12, 7, 5, 1]
    assert labels == ["classical", "techno", "slow", "rock", "guitar", "piano"]  # ties keep vocabulary order
    assert "100 clips" in axes.get_title()
    assert _is_png(figures.save_figure(figure, tmp_path / "f1.png"))


def test_loss_figure_marks_each_restart():
    rows = [{"epoch": e, "train_loss": 1 / (e + 1), "val_loss": 1.2 / (e + 1) + (0.3 if e in (3, 6) else 0),
             "restart": e in (3, 6), "restarts": int(e >= 3) + int(e >= 6), "stopped": e == 8} for e in range(9)]
    rows[4]["val_loss"] = None  # an epoch without validation is a gap, not an error
    axes = figures.loss_history_figure(rows).axes[0]
    restarts = [line.get_xdata()[0] for line in axes.lines if line.get_gid() == "restart"]
    stops = [line.get_xdata()[0] for line in axes.lines if line.get_gid() == "stop"]
    assert restarts == [3, 6] and stops == [8]
    val = next(line for line in axes.lines if line.get_label() == "validation loss")
    assert np.isnan(val.get_ydata()[4]) and val.get_ydata()[3] == pytest.approx(1.2 / 4 + 0.3)
    assert {t.get_text() for t in axes.texts} == {"restart 1", "restart 2"}
    with pytest.raises(ValueError, match="no epochs"):
        figures.loss_history_figure([])


def test_threshold_figure_marks_the_chosen_threshold_and_its_rates():
    probs, targets = _data(2)
    tag = TAGS.index("classical")
    threshold = float(equal_error_thresholds(probs, targets)[tag])
    axes = figures.threshold_figure(probs[:, tag], targets[:, tag], threshold, "classical").axes[0]
    chosen = [line for line in axes.lines if line.get_gid() == "chosen-threshold"]
    assert len(chosen) == 1 and chosen[0].get_xdata()[0] == threshold
    tpr, fpr = rates_at_thresholds(probs[:, [tag]], targets[:, [tag]], torch.tensor([threshold], dtype=torch.float64))
    assert f"TPR {tpr.item():.2f}, FPR {fpr.item():.2f}" in chosen[0].get_label()
    assert {"TPR (recall)", "FPR", "1 - FPR (specificity)"} <= {line.get_label() for line in axes.lines}
    assert "'classical'" in axes.get_title()


def test_roc_figure_shows_the_best_and_worst_tags():
    probs, targets = _data(3)
    auc = [0.9, None, 0.7, 0.55, float("nan"), 0.6]
    axes = figures.roc_figure(probs, targets, TAGS, auc, n=2).axes[0]
    gids = [line.get_gid() for line in axes.lines if line.get_gid()]
    assert gids == ["roc-guitar", "roc-slow", "roc-rock", "roc-techno"]  # best two, then worst two


def test_figure_3_tag_is_classical_when_it_can_be_scored():
    targets = np.zeros((10, 3))
    targets[:6, 0] = 1
    targets[:2, 1] = 1
    assert figures.threshold_tag_index(["rock", "classical", "pop"], targets) == 1
    targets[:, 1] = 1  # no negative: cannot be scored
    assert figures.threshold_tag_index(["rock", "classical", "pop"], targets) == 0
    assert figures.threshold_tag_index(["rock", "classical", "pop"], np.ones((10, 3))) is None


def test_taggram_orders_tags_by_mean_probability():
    probs = np.array([[0.1, 0.9, 0.5], [0.2, 0.7, 0.4]])
    axes = figures.taggram_figure([0.0, 3.0], [3.0, 6.0], probs, ["a", "b", "c"], "song").axes[0]
    assert [t.get_text() for t in axes.get_yticklabels()] == ["b", "c", "a"]
    with pytest.raises(ValueError):
        figures.taggram_figure([0.0], [3.0], probs, ["a", "b", "c"], "song")


def test_write_run_figures_writes_every_figure(tmp_path):
    probs, targets = _data(4)
    thresholds = equal_error_thresholds(probs, targets)
    rows = [{"epoch": e, "train_loss": 1.0 - 0.1 * e, "val_loss": 1.1 - 0.1 * e, "restart": e == 2,
             "restarts": int(e >= 2), "stopped": False} for e in range(4)]
    wave = torch.sin(torch.arange(SAMPLE_RATE * 2) * 2 * math.pi * 440 / SAMPLE_RATE)
    written = figures.write_run_figures(
        tmp_path, tags=TAGS, tag_counts=targets.sum(0), n_clips=len(targets), history_rows=rows, probs=probs,
        targets=targets, thresholds=thresholds, per_tag_auc=[0.9, 0.8, 0.7, 0.6, 0.5, 0.4], example_position=0,
        example_waveform=wave, example_name="#0", frontend=None)
    assert set(written) == {"tag_distribution", "loss", "threshold", "roc", "mel_example"}
    assert written["threshold"].name == "fig3_threshold_classical.png"
    for path in written.values():
        assert path.parent == tmp_path / "figures" and _is_png(path)
    # without history and test predictions only Figure 1 can be drawn
    only = figures.write_run_figures(tmp_path / "bare", tags=TAGS, tag_counts=targets.sum(0), n_clips=None,
                                     history_rows=[])
    assert set(only) == {"tag_distribution"}


def test_example_mel_uses_the_models_frontend_or_a_display_one():
    wave = torch.randn(SAMPLE_RATE)
    mel, config = figures.example_mel(wave, {"n_fft": 512, "hop_length": 256, "n_mels": 40, "backend": "torchaudio"},
                                      SAMPLE_RATE)
    assert mel.shape == (40, SAMPLE_RATE // 256 + 1) and config["n_mels"] == 40
    mel, config = figures.example_mel(wave, None, SAMPLE_RATE)
    assert mel.shape == (figures.DISPLAY_MEL["n_mels"], SAMPLE_RATE // figures.DISPLAY_MEL["hop_length"] + 1)
    predicted = figures.predicted_tags([0.2, 0.9, 0.5], [0.3, 0.5, 0.5], ["a", "b", "c"])
    assert predicted == [("b", 0.9), ("c", 0.5)]


def test_no_figures_leaves_a_finished_run_without_them(mel_cnn_run):
    """The shared run was trained with --no-figures (tests/support/helpers.py); test_wandb_logging's default run
    writes all five."""
    config = json.loads((mel_cnn_run / "config.json").read_text())
    assert config["figures"] is False
    assert (mel_cnn_run / "metrics.json").is_file() and not (mel_cnn_run / figures.FIGURES_DIR).exists()
