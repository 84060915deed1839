"""The paper's figures for the user's own run, plus ROC curves, an example Mel and taggrams.

Written as PNG files into `RUN_DIR/figures/` at the end of a run (and logged to W&B as images):

* ``fig1_tag_distribution.png``: Figure 1, clips per tag of the chosen vocabulary, most frequent
  first, over the whole dataset;
* ``fig2_loss.png``: Figure 2, training and validation loss per epoch (from ``history.csv``),
  with a marker at every global-decay restart;
* ``fig3_threshold_<tag>.png``: Figure 3, TPR, FPR and specificity (1 - FPR) of one tag against
  the threshold on the test clips, with the threshold chosen on validation (where TPR = 1 - FPR,
  paper §4.6); the tag is "classical" as in the paper when it can be scored, else the tag with
  the most positive test clips;
* ``roc_best_worst.png``: ROC curves of the three best and three worst tags by test ROC-AUC;
* ``mel_example.png``: the model's Mel input (for waveform models a display Mel) of one test
  clip, with its true tags and the predicted ones (score >= the tag's threshold).

Every function that draws returns a `matplotlib.figure.Figure` built without pyplot (no global
figure registry; the Agg canvas renders the PNG); `save_figure` writes it atomically and
releases it. `taggram_figure` draws the tag-probability-over-time plot of `run.py --tag
--taggram`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from callbacks.test_predictions import TestPredictionsCapture
from infrastructure.audio import SAMPLE_RATE
from infrastructure.io import atomic_path
from lightning_modules.metrics import fallback_states

FIGURES_DIR = "figures"
PAPER_THRESHOLD_TAG = "classical"  # the paper's Figure 3
DISPLAY_MEL = {"n_fft": 2048, "hop_length": 512, "n_mels": 128, "backend": "torchaudio"}


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save_figure(figure, path: str | Path) -> Path:
    """Render `figure` to a PNG at `path` (`infrastructure.io.atomic_path`: a reader never sees half a file, and
    the file gets the mode the user's umask gives)."""
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            figure.savefig(tmp, format="png")
    finally:
        figure.clear()
    return path


def _numpy(values) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().double().numpy()
    return np.asarray(values, dtype=np.float64)


# --------------------------------------------------------------------------------------------
# Curves
# --------------------------------------------------------------------------------------------
def _rates(scores, labels, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """TPR and FPR of "positive iff score >= t" at each t (NaN without positives / negatives)."""
    pos, neg = np.sort(scores[labels]), np.sort(scores[~labels])

    def rate(sorted_scores: np.ndarray) -> np.ndarray:
        if sorted_scores.size == 0:
            return np.full(thresholds.shape, np.nan)
        at_or_above = sorted_scores.size - np.searchsorted(sorted_scores, thresholds, side="left")
        return at_or_above / sorted_scores.size

    return rate(pos), rate(neg)


def _scores_labels(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    scores, labels = _numpy(scores).ravel(), _numpy(labels).ravel() > 0.5
    if scores.shape != labels.shape or scores.size == 0:
        raise ValueError("scores and labels must be non-empty and of the same length")
    return scores, labels


def threshold_curves(scores, labels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """TPR and FPR of "positive iff score >= t" for every distinct score t (ascending), plus 0 and 1.

    Returns (thresholds, tpr, fpr); TPR (FPR) is NaN throughout when there is no positive (negative).
    """
    scores, labels = _scores_labels(scores, labels)
    thresholds = np.unique(np.concatenate([scores, [0.0, 1.0]]))
    tpr, fpr = _rates(scores, labels, thresholds)
    return thresholds, tpr, fpr


def roc_points(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    """The exact ROC curve (fpr, tpr): (0, 0), then one point per distinct score from the highest."""
    scores, labels = _scores_labels(scores, labels)
    tpr, fpr = _rates(scores, labels, np.unique(scores)[::-1])
    return np.concatenate([[0.0], fpr]), np.concatenate([[0.0], tpr])


# --------------------------------------------------------------------------------------------
# The figures
# --------------------------------------------------------------------------------------------
def tag_distribution_figure(tags: Sequence[str], counts, n_clips: int | None = None, title: str | None = None):
    """Figure 1: clips per tag, most frequent first."""
    counts = _numpy(counts)
    if len(tags) != counts.size or counts.size == 0:
        raise ValueError(f"tag_distribution_figure: {len(tags)} tags but {counts.size} counts")
    order = np.argsort(-counts, kind="stable")
    figure = _figure(max(8.0, 0.22 * len(tags) + 2), 4.8)
    axes = figure.add_subplot()
    axes.bar(np.arange(len(order)), counts[order], color="tab:blue")
    axes.set_xticks(np.arange(len(order)), [tags[i] for i in order], rotation=90, fontsize=8)
    axes.set_xlim(-0.6, len(order) - 0.4)
    axes.set_ylabel("clips")
    clips = f" over {n_clips} clips" if n_clips else ""
    axes.set_title(title or f"Tag distribution of the {len(tags)}-tag vocabulary{clips}")
    return figure


def loss_history_figure(rows: Sequence[dict], title: str | None = None):
    """Figure 2: training and validation loss per epoch, a dashed line at every restart."""
    if not rows:
        raise ValueError("loss_history_figure: the history has no epochs")
    epochs = np.array([row["epoch"] for row in rows], dtype=float)

    def column(name):
        return np.array([np.nan if row.get(name) is None else row[name] for row in rows], dtype=float)

    figure = _figure(7.5, 4.5)
    axes = figure.add_subplot()
    axes.plot(epochs, column("train_loss"), marker="o", markersize=3, label="training loss")
    axes.plot(epochs, column("val_loss"), marker="o", markersize=3, label="validation loss")
    for row in rows:
        if row.get("restart"):
            axes.axvline(row["epoch"], color="tab:red", linestyle="--", linewidth=1, gid="restart")
            axes.annotate(f"restart {row['restarts']}", (row["epoch"], 1.0), xycoords=("data", "axes fraction"),
                          rotation=90, va="top", ha="right", fontsize=8, color="tab:red")
        if row.get("stopped"):
            axes.axvline(row["epoch"], color="black", linestyle=":", linewidth=1, gid="stop")
    axes.set_xlabel("epoch")
    axes.set_ylabel("binary cross-entropy")
    axes.set_title(title or "Loss per epoch (dashed: global-decay restart from the best weights)")
    axes.legend()
    return figure


FELL_BACK_LABEL = "fallback threshold {:.3f}: too few validation positives to choose one"
UNKNOWN_LABEL = "threshold {:.3f}: chosen, or fallen back (checkpoint from before fallbacks were recorded)"


def threshold_figure(scores, labels, threshold: float, tag: str, subset: str = "test clips",
                     fell_back: bool | None = False):
    """Figure 3: TPR, FPR and 1 - FPR of one tag against the threshold, the threshold marked.

    `fell_back` True: the threshold was not chosen but fell back to 0.5 (validation had no
    positive or no negative clip of the tag): its line and the title say so. None: unknown (a
    checkpoint saved before fallbacks were recorded): the label says it may have.
    """
    thresholds, tpr, fpr = threshold_curves(scores, labels)
    figure = _figure(7.0, 4.5)
    axes = figure.add_subplot()
    axes.plot(thresholds, tpr, drawstyle="steps-pre", label="TPR (recall)")
    axes.plot(thresholds, fpr, drawstyle="steps-pre", label="FPR")
    axes.plot(thresholds, 1 - fpr, drawstyle="steps-pre", linestyle="--", label="1 - FPR (specificity)")
    scores_np, labels_np = _numpy(scores).ravel(), _numpy(labels).ravel() > 0.5
    chosen = scores_np >= threshold
    tpr_at = chosen[labels_np].mean() if labels_np.any() else math.nan
    fpr_at = chosen[~labels_np].mean() if (~labels_np).any() else math.nan
    rates = f" (TPR {tpr_at:.2f}, FPR {fpr_at:.2f})"
    if fell_back is None:
        label, gid, how = UNKNOWN_LABEL.format(threshold), "unknown-threshold", "threshold chosen or fallen back"
    elif fell_back:
        label, gid, how = FELL_BACK_LABEL.format(threshold), "fallback-threshold", "threshold FELL BACK to 0.5"
    else:
        label, gid = f"chosen threshold {threshold:.3f}", "chosen-threshold"
        how = "threshold chosen where TPR = 1 - FPR"
    axes.axvline(threshold, color="black", linewidth=1, linestyle="-" if fell_back is False else ":", gid=gid,
                 label=label + rates)
    axes.set_xlim(0, 1)
    axes.set_ylim(-0.02, 1.02)
    axes.set_xlabel("threshold")
    axes.set_ylabel("rate")
    axes.set_title(f"Threshold selection for '{tag}' ({subset}; {how} on validation)", fontsize=9)
    axes.legend(fontsize=8)
    return figure


def roc_figure(probs, targets, tags: Sequence[str], per_tag_auc: Sequence[float | None], n: int = 3):
    """ROC curves of the `n` best and `n` worst tags by ROC-AUC (tags without a score are skipped)."""
    probs, targets = _numpy(probs), _numpy(targets)
    scored = [(float(auc), i) for i, auc in enumerate(per_tag_auc) if auc is not None and not math.isnan(auc)]
    if not scored:
        raise ValueError("roc_figure: no tag has a ROC-AUC")
    scored.sort(key=lambda item: (-item[0], item[1]))
    best = scored[:n]
    worst = [item for item in scored[-n:] if item not in best]
    figure = _figure(6.0, 6.0)
    axes = figure.add_subplot()
    for group, style in ((best, "-"), (worst, ":")):
        for auc, i in group:
            fpr, tpr = roc_points(probs[:, i], targets[:, i])
            axes.plot(fpr, tpr, linestyle=style, gid=f"roc-{tags[i]}", label=f"{tags[i]} (AUC {auc:.3f})")
    axes.plot([0, 1], [0, 1], color="grey", linewidth=0.8)
    axes.set_xlabel("false positive rate")
    axes.set_ylabel("true positive rate")
    axes.set_title(f"ROC curves of the {len(best)} best (solid) and {len(worst)} worst (dotted) tags")
    axes.legend(fontsize=8, loc="lower right")
    return figure


def mel_figure(mel, mel_config: dict, title: str, true_tags: Sequence[str],
               predicted: Sequence[tuple[str, float]]):
    """A Mel spectrogram (n_mels, frames) with the clip's true tags and predicted (tag, score) pairs."""
    mel = _numpy(mel)
    seconds = mel.shape[1] * mel_config["hop_length"] / mel_config["sample_rate"]
    figure = _figure(8.0, 5.0)
    axes = figure.add_subplot()
    image = axes.imshow(mel, origin="lower", aspect="auto", extent=(0, seconds, 0, mel.shape[0]), cmap="magma")
    unit = {"db": "dB", "log1p": "log(1 + C·power)", "none": "power"}.get(mel_config.get("compression", "db"), "")
    figure.colorbar(image, ax=axes, label=unit)
    axes.set_xlabel("time (s)")
    axes.set_ylabel("Mel band")
    truth = ", ".join(true_tags) or "(none)"
    guess = ", ".join(f"{tag} {score:.2f}" for tag, score in predicted) or "(none above threshold)"
    axes.set_title(f"{title}\ntrue: {truth}\npredicted: {guess}", fontsize=8, loc="left")
    return figure


def taggram_figure(starts_s, ends_s, probs, tags: Sequence[str], title: str, *, order_by=None,
                   rows: int | None = None, bold: Sequence[str] = (), xlim=None, xlabel: str = "time (s)"):
    """Tag probability over time: one column per window (`starts_s[k]` to `ends_s[k]`), one row per tag.

    The rows are the `rows` tags (default: all) with the highest `order_by` score (default: the
    mean over the columns), highest on top; tags in `bold` get bold labels. The title is wrapped
    and tag labels longer than 40 characters shortened so that, whatever the file name, every
    label, the title and the colour bar lie inside the image (constrained layout places them).
    """
    probs = _numpy(probs)
    if probs.ndim != 2 or probs.shape[1] != len(tags) or probs.shape[0] != len(starts_s) or \
            len(ends_s) != len(starts_s):
        raise ValueError(f"taggram_figure: probabilities of shape {probs.shape} for {len(starts_s)} segments "
                         f"and {len(tags)} tags")
    score = probs.mean(axis=0) if order_by is None else _numpy(order_by).ravel()
    order = np.argsort(-score, kind="stable")[:rows]
    edges = np.concatenate([np.asarray(starts_s, dtype=float), [float(ends_s[-1])]])
    figure = _figure(max(7.0, min(16.0, 3 + 0.25 * len(starts_s))), max(4.0, 0.22 * len(order) + 2.2))
    axes = figure.add_subplot()
    axes.set_facecolor("0.85")  # song time that no column covers
    mesh = axes.pcolormesh(edges, np.arange(len(order) + 1), probs[:, order].T, vmin=0, vmax=1, cmap="viridis")
    labels = [tags[i] if len(tags[i]) <= 40 else tags[i][:39] + "\u2026" for i in order]
    axes.set_yticks(np.arange(len(order)) + 0.5, labels, fontsize=8)
    for label, i in zip(axes.get_yticklabels(), order):
        if tags[i] in bold:
            label.set_fontweight("bold")
    axes.set_ylim(len(order), 0)
    if xlim is not None:
        axes.set_xlim(*xlim)
    axes.set_xlabel(xlabel)
    figure.colorbar(mesh, ax=axes, label="probability")
    _fitted_suptitle(figure, title, fontsize=9)
    return figure


def _fitted_suptitle(figure, text: str, fontsize: float):
    """A figure title wrapped (long words broken) until it is narrower than the figure."""
    import textwrap

    title = figure.suptitle(text, fontsize=fontsize)
    renderer = figure.canvas.get_renderer()
    width = 0.96 * figure.bbox.width
    chars = max(len(line) for line in text.splitlines())
    while title.get_window_extent(renderer).width > width and chars > 8:
        chars = max(8, int(chars * min(0.9, width / title.get_window_extent(renderer).width)))
        title.set_text("\n".join(textwrap.fill(line, chars, break_on_hyphens=False) for line in text.splitlines()))
    return title


# --------------------------------------------------------------------------------------------
# A run's figures
# --------------------------------------------------------------------------------------------
def threshold_tag_index(tags: Sequence[str], targets) -> int | None:
    """Figure 3's tag: "classical" when it has positive and negative clips, else the most frequent such tag."""
    targets = _numpy(targets)
    positives = targets.sum(axis=0)
    scorable = (positives > 0) & (positives < targets.shape[0])
    if PAPER_THRESHOLD_TAG in tags and scorable[list(tags).index(PAPER_THRESHOLD_TAG)]:
        return list(tags).index(PAPER_THRESHOLD_TAG)
    if not scorable.any():
        return None
    return int(np.argmax(np.where(scorable, positives, -1)))


def example_clip_position(targets) -> int:
    """The clip with the most true tags (the first of equals): a telling example."""
    return int(np.argmax(_numpy(targets).sum(axis=1)))


def predicted_tags(probs, thresholds, tags: Sequence[str]) -> list[tuple[str, float]]:
    """(tag, score) of the tags whose score reaches their threshold, highest score first."""
    probs, thresholds = _numpy(probs).ravel(), _numpy(thresholds).ravel()
    chosen = [(tags[i], float(probs[i])) for i in range(len(tags)) if probs[i] >= thresholds[i]]
    return sorted(chosen, key=lambda item: -item[1])


def example_mel(waveform: torch.Tensor, frontend: dict | None, sample_rate: int) -> tuple[torch.Tensor, dict]:
    """The Mel spectrogram of a float waveform: the model's own frontend, or a display one for waveform models."""
    from datamodules.frontend import MelConfig, build_frontend

    config = MelConfig.from_dict(frontend) if frontend is not None else MelConfig(sample_rate=sample_rate,
                                                                                 **DISPLAY_MEL)
    with torch.inference_mode():
        mel = build_frontend(config)(waveform.float().reshape(1, -1))[0]
    return mel, config.to_dict()


def write_run_figures(run_dir: Path, *, tags: Sequence[str], tag_counts, n_clips: int | None,
                      history_rows: Sequence[dict], probs=None, targets=None, thresholds=None,
                      threshold_fell_back: Sequence[bool | None] | None = None,
                      per_tag_auc: Sequence[float | None] | None = None, example_position: int | None = None,
                      example_waveform: torch.Tensor | None = None, example_name: str = "",
                      frontend: dict | None = None, sample_rate: int = SAMPLE_RATE) -> dict[str, Path]:
    """Write the run's figures into `run_dir/figures/`; returns {name: path} of those written.

    `probs`/`targets` are the (clips, tags) test predictions; `threshold_fell_back` says per tag
    whether its threshold fell back (`metrics.fallback_states`; None: all chosen); `example_waveform`
    is the float waveform of clip `example_position` among them. Figures whose data is missing (no history,
    no test predictions, no example clip) are left out.
    """
    out = Path(run_dir) / FIGURES_DIR
    written: dict[str, Path] = {}
    written["tag_distribution"] = save_figure(tag_distribution_figure(tags, tag_counts, n_clips),
                                              out / "fig1_tag_distribution.png")
    if history_rows:
        written["loss"] = save_figure(loss_history_figure(history_rows), out / "fig2_loss.png")
    if probs is not None and targets is not None and thresholds is not None:
        thresholds = _numpy(thresholds)
        index = threshold_tag_index(tags, targets)
        if index is not None:
            tag = tags[index]
            fell_back = False if threshold_fell_back is None else threshold_fell_back[index]
            written["threshold"] = save_figure(
                threshold_figure(_numpy(probs)[:, index], _numpy(targets)[:, index], float(thresholds[index]), tag,
                                 fell_back=fell_back),
                out / f"fig3_threshold_{tag.replace(' ', '_').replace('/', '_')}.png")
        if per_tag_auc is not None and any(a is not None and not math.isnan(a) for a in per_tag_auc):
            written["roc"] = save_figure(roc_figure(probs, targets, tags, per_tag_auc), out / "roc_best_worst.png")
        if example_waveform is not None and example_position is not None:
            true_tags = [tags[i] for i in np.flatnonzero(_numpy(targets)[example_position] > 0.5)]
            mel, config = example_mel(example_waveform, frontend, sample_rate)
            written["mel_example"] = save_figure(
                mel_figure(mel, config, f"Test clip {example_name}", true_tags,
                           predicted_tags(_numpy(probs)[example_position], thresholds, tags)),
                out / "mel_example.png")
    return written


def figures_for_run(run_dir: Path, module, datamodule, capture: TestPredictionsCapture, history_path: Path,
                    report=None) -> dict[str, Path]:
    """`write_run_figures` from a finished run's module, data module, captured test predictions and history."""
    from callbacks.history import read_history
    from infrastructure.audio import INT16_SCALE

    tags = list(module.tags)
    labels = np.asarray(datamodule.dataset("train").labels)  # one row per annotated clip of the dataset
    history = read_history(history_path) if Path(history_path).is_file() else []
    position, waveform, name = None, None, ""
    if capture.probs is not None:
        position = example_clip_position(capture.targets)
        row = int(capture.clip_ids[position])
        samples = np.asarray(datamodule.example_waveform(row), dtype=np.float32)
        waveform = torch.from_numpy(samples / INT16_SCALE)
        name = f"(annotations row {row})"
    return write_run_figures(
        run_dir, tags=tags, tag_counts=labels.sum(axis=0), n_clips=len(labels), history_rows=history,
        probs=capture.probs, targets=capture.targets, thresholds=module.thresholds.detach().cpu(),
        threshold_fell_back=fallback_states(module.threshold_fallback.detach().cpu()),
        per_tag_auc=report.per_tag_roc_auc if report is not None else None, example_position=position,
        example_waveform=waveform, example_name=name, frontend=module.hparams.frontend,
        sample_rate=int(module.hparams.sample_rate))
