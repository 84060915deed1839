"""A threshold that fell back to 0.5 is a recorded fact: chosen on validation, kept in the checkpoint, marked in
`--tag` (text and JSON), per_tag.csv, results.md and the threshold figure; old checkpoints load with it derived.

The model is an untrained lstm_mel on short segments (no dataset, no training): what is checked is the bookkeeping,
from a validation's targets to every place a threshold is shown.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import soundfile as sf
import torch

import run
from datamodules.frontend import MelConfig
from experiments.reporting.figures import threshold_figure
from experiments.reporting.predictions import PREDICTIONS_FILE, Predictions, read_predictions, write_predictions
from experiments.reporting.results import write_results
from infrastructure.audio import SAMPLE_RATE
from lightning_modules.metrics import (
    THRESHOLD_CHOSEN,
    THRESHOLD_FELL_BACK,
    THRESHOLD_UNKNOWN,
    equal_error_thresholds,
    fallback_states,
    tagging_metrics,
    threshold_fallbacks,
)
from lightning_modules.registry import MODELS, input_shape, network_config, segment_layout
from lightning_modules.tagging_module import TaggingModule
from tagging.report import FELL_BACK_NOTE, UNKNOWN_NOTE

TAGS = ["guitar", "drums", "piano", "voice"]


def _validation():
    """Validation targets where piano has no positive clip and voice no negative one: both fall back."""
    rng = np.random.default_rng(0)
    targets = (rng.random((40, len(TAGS))) < 0.4).astype(np.int64)
    targets[:, 2] = 0
    targets[:, 3] = 1
    targets[0, :2] = (1, 0)
    targets[1, :2] = (0, 1)
    probs = rng.random(targets.shape).astype(np.float32)
    return torch.from_numpy(probs), torch.from_numpy(targets)


def _module() -> TaggingModule:
    spec = MODELS["lstm_mel"]
    frontend = MelConfig.from_dict({**spec.frontend.to_dict(), "hop_length": 256, "n_mels": 32})
    layout = segment_layout(spec, 16_000, frontend)
    config = network_config(spec, input_shape(frontend, layout), len(TAGS))
    return TaggingModule(None, config, TAGS, frontend.to_dict(), layout.to_dict(), SAMPLE_RATE)


def _checkpoint(tmp_path, module: TaggingModule, name: str, drop_record: bool = False):
    state = module.state_dict()
    if drop_record:  # as a checkpoint saved before the record existed
        state.pop("threshold_fallback")
    path = tmp_path / name
    torch.save({"hyper_parameters": dict(module.hparams), "state_dict": state}, path)
    return path


def test_the_fallback_is_the_validation_without_positives_or_negatives():
    probs, targets = _validation()
    fell_back = threshold_fallbacks(targets)
    assert fell_back.tolist() == [False, False, True, True]
    thresholds = equal_error_thresholds(probs, targets)
    assert thresholds[fell_back].tolist() == [0.5, 0.5]
    report = tagging_metrics(probs, targets, TAGS, thresholds=thresholds, threshold_fell_back=fell_back)
    assert report.threshold_fell_back == [False, False, True, True]
    assert report.to_dict()["threshold_fell_back"] == [False, False, True, True]
    assert fallback_states(torch.tensor([THRESHOLD_CHOSEN, THRESHOLD_FELL_BACK, THRESHOLD_UNKNOWN])) == [False, True,
                                                                                                          None]


def test_validation_records_the_fallbacks_and_old_checkpoints_load_with_them_derived(tmp_path):
    module = _module()
    assert module.threshold_fallback.tolist() == [THRESHOLD_FELL_BACK] * len(TAGS)  # nothing chosen yet
    probs, targets = _validation()
    module.thresholds.copy_(equal_error_thresholds(probs, targets))
    module.threshold_fallback.copy_(threshold_fallbacks(targets))  # what on_validation_epoch_end does
    loaded = TaggingModule.from_checkpoint(_checkpoint(tmp_path, module, "new.ckpt"))
    assert loaded.threshold_fallback.tolist() == [0, 0, 1, 1]
    old = TaggingModule.from_checkpoint(_checkpoint(tmp_path, module, "old.ckpt", drop_record=True))
    # not 0.5: chosen for sure; exactly 0.5: the fallback value, but a chosen threshold can be 0.5 too
    assert old.threshold_fallback.tolist() == [THRESHOLD_CHOSEN, THRESHOLD_CHOSEN, THRESHOLD_UNKNOWN,
                                               THRESHOLD_UNKNOWN]
    assert torch.equal(old.thresholds, module.thresholds)


def test_per_tag_csv_results_md_and_predictions_mark_the_fallbacks(tmp_path):
    probs, targets = _validation()
    thresholds = equal_error_thresholds(probs, targets)
    record = threshold_fallbacks(targets).to(torch.int8)
    record[0] = THRESHOLD_UNKNOWN
    test_targets = targets.clone()
    test_targets[:3, 2:] = torch.tensor([[1, 0], [0, 0], [1, 1]])  # the test set scores every tag
    report = tagging_metrics(probs, test_targets, TAGS, thresholds=thresholds, threshold_fell_back=record)
    write_results(tmp_path, {"model": "lstm_mel", "data": "synthetic"}, report, thresholds, best_checkpoint=None,
                  best_val={}, epochs=1)
    rows = {r["tag"]: r for r in csv.DictReader((tmp_path / "per_tag.csv").open())}
    assert [rows[t]["threshold_fell_back"] for t in TAGS] == ["unknown", "False", "True", "True"]
    assert float(rows["piano"]["threshold"]) == 0.5
    md = (tmp_path / "results.md").read_text()
    assert "Thresholds that fell back to 0.5 (too few validation positives to choose one" in md
    assert "choose one; their TPR and FPR count in the means all the same): piano, voice." in md
    assert "may have fallen back (the checkpoint was saved before fallbacks were recorded): guitar." in md
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["test"]["threshold_fell_back"] == [None, False, True, True]
    n = len(probs)
    write_predictions(tmp_path / PREDICTIONS_FILE, Predictions(np.arange(n), np.arange(n), test_targets, probs,
                                                               thresholds, TAGS, "folder", "paper", "synthetic",
                                                               record.numpy()))
    assert read_predictions(tmp_path / PREDICTIONS_FILE).threshold_fallback.tolist() == [-1, 0, 1, 1]
    old = np.load(tmp_path / PREDICTIONS_FILE)  # a file written before the record: derived from the thresholds
    np.savez(tmp_path / "old.npz", **{k: old[k] for k in old.files if k != "threshold_fallback"})
    assert read_predictions(tmp_path / "old.npz").threshold_fallback.tolist() == [0, 0, -1, -1]


@pytest.mark.parametrize("fell_back, gid, words", [
    (False, "chosen-threshold", "chosen threshold 0.500"),
    (True, "fallback-threshold", "fallback threshold 0.500: too few validation positives to choose one"),
    (None, "unknown-threshold", "threshold 0.500: chosen, or fallen back"),
])
def test_the_threshold_figure_labels_a_fallback(fell_back, gid, words):
    scores, labels = np.linspace(0, 1, 30), np.arange(30) % 3 == 0
    figure = threshold_figure(scores, labels, 0.5, "piano", fell_back=fell_back)
    (axes,) = figure.axes
    (line,) = [line for line in axes.get_lines() if line.get_gid() == gid]
    assert line.get_label().startswith(words)
    assert ("FELL BACK" in axes.get_title()) == (fell_back is True)


def _song(tmp_path):
    path = tmp_path / "song.wav"
    t = np.arange(3 * SAMPLE_RATE) / SAMPLE_RATE
    sf.write(path, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), SAMPLE_RATE)
    return path


def test_tag_marks_tags_whose_threshold_fell_back_in_text_and_json(tmp_path, capsys):
    module = _module()
    module.thresholds.copy_(torch.tensor([0.0, 1.0, 0.5, 0.5]))  # guitar always above, drums never
    module.threshold_fallback.copy_(torch.tensor([0, 0, 1, 1], dtype=torch.int8))
    checkpoint = _checkpoint(tmp_path, module, "model.ckpt")
    song = _song(tmp_path)
    assert run.main(["--tag", str(song), "--checkpoint", str(checkpoint), "--top-k", "4", "--accelerator", "cpu"]) == 0
    out = capsys.readouterr().out
    top = next(line for line in out.splitlines() if line.startswith("  top 4: "))
    marked = {item.rsplit(" ", 1)[0]: item.endswith("*") for item in top.removeprefix("  top 4: ").split(", ")}
    assert marked == {"guitar": False, "drums": False, "piano": True, "voice": True}
    assert out.count(FELL_BACK_NOTE) == 1 and UNKNOWN_NOTE not in out
    tags = next(line for line in out.splitlines() if line.startswith("  tags:  ")).removeprefix("  tags:  ")
    in_tags = {item.split(" (")[0]: item.endswith("*)") for item in tags.split(", ")}
    assert in_tags["guitar"] is False and "drums" not in in_tags and all(in_tags.get(t, True) for t in ("piano",
                                                                                                       "voice"))

    assert run.main(["--tag", str(song), "--checkpoint", str(checkpoint), "--json", "--accelerator", "cpu"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["threshold_fell_back"] == [False, False, True, True]
    (entry,) = document["files"]
    assert {t["tag"]: t["threshold_fell_back"] for t in entry["top"]} == {"guitar": False, "drums": False,
                                                                         "piano": True, "voice": True}
    assert all(t["threshold_fell_back"] == (t["tag"] in ("piano", "voice")) for t in entry["tags"])


def test_tag_with_a_checkpoint_from_before_the_record_says_it_does_not_know(tmp_path, capsys):
    module = _module()
    module.thresholds.copy_(torch.tensor([0.0, 1.0, 0.5, 0.31]))
    old = _checkpoint(tmp_path, module, "old.ckpt", drop_record=True)
    assert run.main(["--tag", str(_song(tmp_path)), "--checkpoint", str(old), "--top-k", "4",
                     "--accelerator", "cpu"]) == 0
    out = capsys.readouterr().out
    top = next(line for line in out.splitlines() if line.startswith("  top 4: "))
    assert [item.rsplit(" ", 1)[0] for item in top.removeprefix("  top 4: ").split(", ") if item.endswith("?")] \
        == ["piano"]
    assert UNKNOWN_NOTE in out and FELL_BACK_NOTE not in out
    assert run.main(["--tag", str(_song(tmp_path)), "--checkpoint", str(old), "--json", "--accelerator", "cpu"]) == 0
    assert json.loads(capsys.readouterr().out)["threshold_fell_back"] == [False, False, None, False]


def test_the_taggram_labels_tags_whose_threshold_fell_back():
    from tagging.taggram import Taggram, taggram_plot

    starts = np.arange(5) * 3.0
    taggram = Taggram(starts_s=starts, centres_s=starts + 1.5, probs=np.full((5, len(TAGS)), 0.6), window_s=3.0,
                      hop_s=3.0, padded=np.zeros(5), excerpt=(0.0, 15.0))
    figure = taggram_plot(taggram, TAGS, np.array([0.9, 0.8, 0.7, 0.6]), np.array([0.5, 0.5, 0.5, 0.9]), "song.wav",
                          fell_back={"guitar": False, "drums": False, "piano": True, "voice": None})
    labels = [label.get_text() for label in figure.axes[0].get_yticklabels()]
    assert labels == ["guitar", "drums", "piano*", "voice?"]
    bold = [label.get_text() for label in figure.axes[0].get_yticklabels() if label.get_fontweight() == "bold"]
    assert bold == ["guitar", "drums", "piano*"]
    title = figure._suptitle.get_text()
    assert "*: threshold fell back to 0.5" in title and "?: threshold 0.5, chosen or fallen back" in title
