"""Distillation's loss and teachers (lightning_modules/distillation.py): what the student learns from, for every model.

The teachers read the batch's clean int16 crop, before mixup and SpecAugment; the loss is binary cross-entropy
with weight 1 - w on the tags and w on the teachers' probabilities (only the teachers' for unlabelled examples);
mixup mixes the two terms as it mixes examples; the teachers are no part of the student (state dict, optimiser,
copies). Every registered model (its CPU-sized variant) trains as a student through the suite's training step.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from datamodules.frontend import MelConfig, build_frontend
from experiments.resolve import mel_settings, network_overrides
from infrastructure.audio import INT16_SCALE
from infrastructure.errors import ConfigError
from lightning_modules.augmentation import mixup
from lightning_modules.distillation import (
    Teacher,
    TeacherEnsemble,
    soft_binary_cross_entropy,
    teacher_from_checkpoint,
    teacher_starts,
)
from lightning_modules.registry import MODELS, build_network, input_shape, network_config, segment_layout
from lightning_modules.tagging_module import TaggingModule
from tests.support.helpers import CHUNK_CLIP_SAMPLES, run_options, small_model_args

TAGS = ["a", "b", "c", "d"]
pytestmark = pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")  # steps called without a Trainer


class _Recording(nn.Module):
    """A waveform 'network' that records its input and maps each segment's mean to logits."""

    def __init__(self, n_tags: int = 4):
        super().__init__()
        self.linear = nn.Linear(1, n_tags)
        self.seen: list[torch.Tensor] = []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        return self.linear(x.mean(dim=-1, keepdim=True) if x.dim() == 2 else x.mean(dim=(1, 2)).unsqueeze(1))


def _ensemble(*networks: nn.Module, segment: int, weight: float = 0.9, temperature: float = 1.0) -> TeacherEnsemble:
    return TeacherEnsemble([Teacher(n, build_frontend(None), segment) for n in networks], weight, temperature)


def test_the_loss_is_binary_cross_entropy_weighted_between_tags_and_teachers():
    torch.manual_seed(0)
    logits, tags = torch.randn(6, 4), (torch.rand(6, 4) > 0.5).float()
    waveform = (torch.randn(6, 100) * 3000).to(torch.int16)
    teachers = _ensemble(_Recording(), _Recording(), segment=100, weight=0.7, temperature=2.0)
    labeled = torch.tensor([True, True, True, False, True, False])
    batch = teachers.soft_targets({"waveform": waveform, "target": tags, "labeled": labeled})
    probs = batch["teacher_probs"]
    # the ensemble's probabilities: each teacher's sigmoid(logit / T), averaged, as --evaluate averages members
    audio = waveform.float() / INT16_SCALE
    expected = torch.stack([torch.sigmoid(t.network.linear(audio.mean(dim=1, keepdim=True)) / 2.0)
                            for t in teachers.teachers]).mean(dim=0)
    torch.testing.assert_close(probs, expected)
    loss = soft_binary_cross_entropy(logits, batch["positive"], batch["negative"])
    bce = lambda z, t: F.binary_cross_entropy_with_logits(z, t, reduction="none").mean(dim=1)  # noqa: E731
    per_example = torch.where(labeled, 0.3 * bce(logits, tags) + 0.7 * bce(logits, probs), bce(logits, probs))
    torch.testing.assert_close(loss, per_example.mean())
    # without teachers' weight and with every example labelled: the plain loss of training
    plain = _ensemble(_Recording(), segment=100, weight=0.0).soft_targets({"waveform": waveform, "target": tags})
    torch.testing.assert_close(soft_binary_cross_entropy(logits, plain["positive"], plain["negative"]),
                               F.binary_cross_entropy_with_logits(logits, tags))


def test_mixup_mixes_the_loss_terms_as_it_mixes_the_examples():
    torch.manual_seed(1)
    logits, tags = torch.randn(5, 4), (torch.rand(5, 4) > 0.5).float()
    batch = _ensemble(_Recording(), segment=50).soft_targets(
        {"waveform": (torch.randn(5, 50) * 3000).to(torch.int16), "target": tags,
         "labeled": torch.tensor([True, False, True, True, False])})
    inputs = torch.randn(5, 3)
    torch.manual_seed(7)
    _, _, positive, negative = mixup(inputs, tags, 0.4, batch["positive"], batch["negative"])
    torch.manual_seed(7)
    lam = float(torch.distributions.Beta(0.4, 0.4).sample())
    perm = torch.randperm(5)
    per_example = F.softplus(-logits) * batch["positive"] + F.softplus(logits) * batch["negative"]
    per_example_swapped = F.softplus(-logits) * batch["positive"][perm] + F.softplus(logits) * batch["negative"][perm]
    torch.testing.assert_close(soft_binary_cross_entropy(logits, positive, negative),
                               (lam * per_example + (1 - lam) * per_example_swapped).mean())


def test_a_teacher_covers_the_crop_with_its_own_segments():
    assert teacher_starts(59_049, 59_049) == [0]
    assert teacher_starts(100, 30) == [0, 23, 47, 70]  # ceil(100 / 30) segments from the start to the end
    assert teacher_starts(465_920, 59_049)[-1] == 465_920 - 59_049 and len(teacher_starts(465_920, 59_049)) == 8
    with pytest.raises(ConfigError, match="cannot see"):
        teacher_starts(100, 101)
    recording = _Recording()
    teachers = _ensemble(recording, segment=30)
    waveform = torch.arange(200, dtype=torch.int16).view(2, 100)
    teachers.probabilities(waveform)
    (seen,) = recording.seen
    assert seen.shape == (8, 30)  # 2 crops x 4 segments
    torch.testing.assert_close(seen[1], waveform[0, 23:53].float() / INT16_SCALE)


class _Crops:
    """A training set of fixed crops: item i is segment i % 2 of clip row 10 + i // 2."""

    fixed_crops = True

    def __init__(self, n: int):
        torch.manual_seed(5)
        self.waveforms = (torch.randn(n, 100) * 3000).to(torch.int16)

    def __len__(self) -> int:
        return len(self.waveforms)

    def __getitem__(self, key):
        item, _ = key
        return {"waveform": self.waveforms[item], "clip": torch.tensor(10 + item // 2), "segment": torch.tensor(item % 2)}


def test_fixed_crops_are_labelled_once_and_every_epoch_reads_those_probabilities():
    crops, recording = _Crops(7), _Recording()
    teachers = _ensemble(recording, segment=100, temperature=2.0)
    assert teachers.label_once(crops, batch_size=3, device="cpu") == 7
    assert [len(seen) for seen in recording.seen] == [3, 3, 1]  # one pass, in item order, in fixed batches
    pick = [5, 0, 3]
    batch = {"waveform": crops.waveforms[pick], "target": torch.zeros(3, 4),
             "clip": torch.tensor([10 + i // 2 for i in pick]), "segment": torch.tensor([i % 2 for i in pick])}
    probs = teachers.soft_targets(batch)["teacher_probs"]
    assert len(recording.seen) == 3  # the teachers did not run again
    torch.testing.assert_close(probs, teachers.probabilities(batch["waveform"]))  # what on the fly would give
    again = _ensemble(recording, segment=100, temperature=2.0)
    again.label_once(crops, batch_size=3, device="cpu")  # a resumed run's pass: the same values, bit for bit
    assert torch.equal(again.cached[:-1], teachers.cached[:-1]) and torch.isnan(teachers.cached[-1]).all()
    # a crop the pass never saw reads NaN, which the loss refuses (--nonfinite-loss), never another crop's targets
    unseen = {**batch, "clip": torch.tensor([10, 99, 14]), "segment": torch.tensor([0, 0, 0])}
    probs = teachers.soft_targets(unseen)["teacher_probs"]
    assert torch.isfinite(probs[0]).all() and torch.isnan(probs[1:]).all()
    with pytest.raises(RuntimeError, match="labelled crops only"):
        teachers.soft_targets({**batch, "labeled": torch.tensor([True, False, True])})


def _module(**augmentation) -> TaggingModule:
    return TaggingModule(network=_Recording(), network_config={"name": "x", "class": "x", "kwargs": {}}, tags=TAGS,
                         frontend={"n_mels": 4}, layout={"segment_samples": 100, "segments_per_clip": 1},
                         **augmentation)


def test_teachers_read_the_clean_crop_and_the_student_the_augmented_input():
    module = _module(mixup_alpha=0.4, freq_mask=0.5, time_mask=0.5)
    teacher = _Recording()
    module.set_teacher(_ensemble(teacher, segment=100))
    torch.manual_seed(3)
    waveform = (torch.randn(4, 100) * 3000).to(torch.int16)
    batch = {"waveform": waveform, "input": torch.randn(4, 4, 10), "target": torch.ones(4, 4),
             "clip": torch.arange(4), "segment": torch.zeros(4, dtype=torch.long)}
    loss = module.training_step(batch, 0)
    assert torch.isfinite(loss)
    torch.testing.assert_close(teacher.seen[0], waveform.float() / INT16_SCALE)  # unaugmented, unmixed
    assert not torch.equal(module.network.seen[0], batch["input"])  # the student's input was augmented
    module.validation_step(batch, 0)  # evaluation: no teacher, the true tags
    assert len(teacher.seen) == 1 and torch.equal(module.network.seen[-1], batch["input"])


def test_teachers_are_no_part_of_the_student():
    module = _module()
    teachers = _ensemble(_Recording(), segment=100)
    module.set_teacher(teachers)
    assert not any(key.startswith(("teacher", "_teacher")) for key in module.state_dict())
    assert {id(p) for p in module.parameters()} == {id(p) for p in module.network.parameters()}
    assert all(not p.requires_grad for p in teachers.parameters())
    module.train()
    assert not teachers.training and not any(m.training for m in teachers.modules())
    copied = copy.deepcopy(module)  # what the EMA's average does
    assert copied.teacher is teachers and copied.network is not module.network
    loaded = TaggingModule(network=_Recording(), **module.hparams)  # what a checkpoint rebuilds: the student alone
    assert loaded.teacher is None and set(loaded.state_dict()) == set(module.state_dict())


def test_weights_and_temperatures_outside_their_ranges_are_refused():
    with pytest.raises(ConfigError, match="distill-weight"):
        _ensemble(_Recording(), segment=10, weight=1.5)
    with pytest.raises(ConfigError, match="distill-temperature"):
        _ensemble(_Recording(), segment=10, temperature=0.0)
    with pytest.raises(ConfigError, match="at least one teacher"):
        TeacherEnsemble([], 0.9, 1.0)


def _small(name: str, seed: int):
    """(network config, frontend dict or None, layout) of `name`'s CPU-sized variant for 5.25 s clips."""
    spec = MODELS[name].small_variant()
    options = run_options(*small_model_args(name), model=name)
    frontend = mel_settings(spec, options)
    layout = segment_layout(spec, CHUNK_CLIP_SAMPLES, frontend, options.segments_per_clip)
    config = network_config(spec, input_shape(frontend, layout), len(TAGS), **network_overrides(options))
    return config, frontend, layout


@pytest.mark.parametrize("name", list(MODELS))
def test_every_model_learns_from_a_teacher_of_its_own_architecture(name, monkeypatch):
    """Forward and backward of the distillation loss for each registered model (its small variant) as the student, a
    trained-looking copy of it (other initial weights) as the teacher; the teacher gets no gradient."""
    monkeypatch.setitem(MODELS, name, MODELS[name].small_variant())
    config, frontend, layout = _small(name, 0)
    torch.manual_seed(0)
    student = TaggingModule(build_network(config), config, TAGS, frontend and frontend.to_dict(), layout.to_dict(),
                            16_000, mixup_alpha=0.2)
    torch.manual_seed(1)
    teacher_network = build_network(config)
    hparams = {"network_config": config, "frontend": frontend and frontend.to_dict(), "layout": layout.to_dict()}
    teachers = TeacherEnsemble([teacher_from_checkpoint(hparams, teacher_network.state_dict(), name)], 0.9, 1.0)
    student.set_teacher(teachers)
    torch.manual_seed(2)
    waveform = (torch.randn(3, layout.segment_samples) * 2000).to(torch.int16)
    student_frontend = build_frontend(MelConfig.from_dict(frontend.to_dict()) if frontend is not None else None)
    batch = {"waveform": waveform, "input": student_frontend(waveform.float() / INT16_SCALE),
             "target": torch.tensor([[1, 0, 0, 1], [0, 1, 0, 0], [1, 1, 0, 0]], dtype=torch.float32),
             "clip": torch.arange(3), "segment": torch.zeros(3, dtype=torch.long),
             "labeled": torch.tensor([True, True, False])}
    student.train()
    loss = student.training_step(batch, 0)
    loss.backward()
    assert torch.isfinite(loss)
    gradients = [p.grad for p in student.network.parameters() if p.requires_grad]
    assert gradients and all(g is not None and torch.isfinite(g).all() for g in gradients)
    assert any(float(g.abs().sum()) > 0 for g in gradients)
    assert all(p.grad is None for p in teachers.parameters())
    # the teacher's probabilities are those of its own evaluation of the crop (one segment: the crop itself)
    teacher_network.eval()
    with torch.no_grad():
        expected = torch.sigmoid(teacher_network(student_frontend(waveform.float() / INT16_SCALE)))
    torch.testing.assert_close(teachers.probabilities(waveform), expected)
