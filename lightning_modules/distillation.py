"""Distillation: frozen teachers label the student's own crop, and the loss mixes their probabilities with the tags.

`TeacherEnsemble` holds one or more trained networks, each with its own Mel frontend (or none) and segment
length, in evaluation mode and without gradients. For a training batch it reads the int16 crop the student
reads (the data module keeps it beside the student's input: `keep_waveform`), before any augmentation: each
teacher cuts the crop into its own segments, as its evaluation cuts a clip (one segment when the lengths are
equal; otherwise ceil(crop / segment) of them spread evenly from the crop's start to its end; a teacher whose
segment is longer than the crop is refused when the run is resolved, `experiments.teachers`), and averages
sigmoid(logit / T) over them; the teachers are averaged in turn, as `--evaluate RUN RUN ...` averages an
ensemble (at T = 1, each teacher gives exactly what its evaluation of that audio gives).

Where every training item reads the same crop in every epoch (fixed crops, or clips no longer than the
student's segment: `SegmentDataset.fixed_crops`) and no unlabelled pool is mixed in, the teachers label
each crop once, when training starts (`TeacherEnsemble.label_once`), and every epoch reads those
probabilities: the teachers' forward passes then cost one pass over the training set instead of one per
epoch. The pass goes through the items in their order, in fixed batches, so a resumed run computes
exactly the values an uninterrupted one computed. Random crops (and the pool's crops) are new in every
epoch: a cache would be read once per entry, so the teachers label those batches as training goes.

The loss (`soft_targets`, `soft_binary_cross_entropy`) is, per example and tag, binary cross-entropy with
weight 1 - w on the true tag and w on the teachers' probability p (Schmid et al. 2023's weighting of a label
and a distillation term, both binary cross-entropy on the student's logits):

    (1 - w) BCE(z, y) + w BCE(z, p) = softplus(-z) [(1 - w) y + w p] + softplus(z) [(1 - w)(1 - y) + w (1 - p)]

An unlabelled example of self-training has the teachers' term alone (weight 1). Both brackets are linear in
the example, so mixup mixes them with its weight and pairing (`lightning_modules.augmentation.mixup`): the
mixed example's loss is then exactly the mixture of the two examples' losses, labelled or not, and the
teachers always saw the two crops unmixed. Every example weighs 1 in the batch mean, as in plain training.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from infrastructure.audio import INT16_SCALE
from infrastructure.errors import ConfigError


def teacher_starts(crop_samples: int, segment_samples: int) -> list[int]:
    """Where a teacher reading ``segment_samples`` looks in a crop of ``crop_samples``: ceil(crop / segment)
    segments spread evenly from the crop's start to its end (one, at 0, when the lengths are equal)."""
    if segment_samples > crop_samples:
        raise ConfigError(f"a teacher reading {segment_samples}-sample segments cannot see a {crop_samples}-sample "
                          "crop whole")
    count = math.ceil(crop_samples / segment_samples)
    room = crop_samples - segment_samples
    if count == 1:
        return [0]
    return [round(k * room / (count - 1)) for k in range(count)]


class Teacher(nn.Module):
    """One trained network with its own frontend and segment length, frozen."""

    def __init__(self, network: nn.Module, frontend: nn.Module, segment_samples: int, name: str = "teacher"):
        super().__init__()
        self.network, self.frontend, self.segment_samples, self.name = network, frontend, int(segment_samples), name
        self.requires_grad_(False)
        self.eval()

    def probabilities(self, audio: torch.Tensor, temperature: float) -> torch.Tensor:
        """(batch, n_tags) mean of sigmoid(logit / T) over this teacher's segments of float audio (batch, samples)."""
        starts = teacher_starts(audio.shape[1], self.segment_samples)
        segments = torch.stack([audio[:, s:s + self.segment_samples] for s in starts], dim=1)
        logits = self.network(self.frontend(segments.reshape(-1, self.segment_samples)))
        probs = torch.sigmoid(logits.float() / temperature)
        return probs.view(len(audio), len(starts), -1).mean(dim=1)


class _Shared:
    """A reference that copies of its owner share: `copy.deepcopy` (the EMA's copy of the module) returns it as it
    is, so a copy never duplicates the teachers' weights."""

    def __init__(self, value) -> None:
        self.value = value

    def __deepcopy__(self, memo) -> _Shared:
        return self


class TeacherEnsemble(nn.Module):
    """The teachers of a run, their loss weight ``weight`` (w above) and temperature (see the module docstring)."""

    def __init__(self, teachers: list[Teacher], weight: float, temperature: float):
        super().__init__()
        if not teachers:
            raise ConfigError("distillation needs at least one teacher")
        if not 0.0 <= weight <= 1.0:
            raise ConfigError(f"--distill-weight must be in [0, 1], got {weight}")
        if not temperature > 0:
            raise ConfigError(f"--distill-temperature must be > 0, got {temperature}")
        self.teachers = nn.ModuleList(teachers)
        self.weight, self.temperature = float(weight), float(temperature)
        self.requires_grad_(False)
        self.eval()
        self.cached: torch.Tensor | None = None
        """(items + 1, n_tags): the probabilities of `label_once`'s crops, then a row of NaN (see `_lookup`)."""
        self._lookup: torch.Tensor | None = None
        """(clip rows, segments) -> row of `cached`; a pair the pass did not see points at the NaN row."""

    @torch.no_grad()
    def label_once(self, dataset, batch_size: int, device) -> int:
        """Label every item of a training set with fixed crops once, in item order and batches of ``batch_size``,
        and keep the probabilities on ``device`` for `soft_targets`; the number of items labelled."""
        probs, clips, segments = [], [], []
        for start in range(0, len(dataset), batch_size):
            items = [dataset[(i, 0)] for i in range(start, min(start + batch_size, len(dataset)))]
            probs.append(self.probabilities(torch.stack([item["waveform"] for item in items]).to(device)))
            clips += [int(item["clip"]) for item in items]
            segments += [int(item["segment"]) for item in items]
        if len(set(zip(clips, segments))) != len(clips):
            raise RuntimeError("label_once: two training items name the same (clip, segment)")
        nan = torch.full((1, probs[0].shape[1]), float("nan"), device=device)
        self.cached = torch.cat([*probs, nan])
        # a pair no item gave reads the NaN row: a loss of NaN, which --nonfinite-loss refuses, never another's targets
        self._lookup = torch.full((max(clips) + 1, max(segments) + 1), len(clips), dtype=torch.long, device=device)
        self._lookup[torch.tensor(clips, device=device), torch.tensor(segments, device=device)] = torch.arange(
            len(clips), device=device)
        return len(clips)

    def _batch_probabilities(self, batch: dict) -> torch.Tensor:
        if self.cached is None:
            return self.probabilities(batch["waveform"])
        if batch.get("labeled") is not None:
            raise RuntimeError("the teachers' cache holds labelled crops only; a run with unlabelled audio labels "
                               "every batch as it trains")
        clips, segments = batch["clip"].to(self._lookup.device), batch["segment"].to(self._lookup.device)
        outside = (clips >= self._lookup.shape[0]) | (segments >= self._lookup.shape[1])
        rows = self._lookup[clips.clamp(max=self._lookup.shape[0] - 1), segments.clamp(max=self._lookup.shape[1] - 1)]
        return self.cached[torch.where(outside, len(self.cached) - 1, rows)]

    def train(self, mode: bool = True) -> TeacherEnsemble:
        """Always in evaluation mode (dropout off, batch norm's running statistics): a teacher never trains."""
        return super().train(False)

    @torch.no_grad()
    def probabilities(self, waveform: torch.Tensor) -> torch.Tensor:
        """(batch, n_tags) float32: the teachers' mean probabilities for an int16 (or float) crop batch."""
        audio = waveform.float() / INT16_SCALE if not waveform.is_floating_point() else waveform.float()
        probs = [teacher.probabilities(audio, self.temperature) for teacher in self.teachers]
        return torch.stack(probs).mean(dim=0)

    def soft_targets(self, batch: dict) -> dict:
        """The batch with ``positive`` and ``negative``, the per-example weights of softplus(-z) and softplus(z)
        (the module docstring), from its true tags, its ``labeled`` flags (all True without one) and the
        teachers' probabilities of its ``waveform``."""
        probs = self._batch_probabilities(batch)
        targets = batch["target"].float()
        labeled = batch.get("labeled")
        label_weight = torch.full((len(targets), 1), 1.0 - self.weight, device=targets.device)
        teacher_weight = torch.full_like(label_weight, self.weight)
        if labeled is not None:
            unlabeled = ~labeled.to(targets.device).bool().view(-1, 1)
            label_weight = label_weight.masked_fill(unlabeled, 0.0)
            teacher_weight = teacher_weight.masked_fill(unlabeled, 1.0)
        positive = label_weight * targets + teacher_weight * probs
        negative = label_weight * (1 - targets) + teacher_weight * (1 - probs)
        return {**batch, "positive": positive, "negative": negative, "teacher_probs": probs}


def soft_binary_cross_entropy(logits: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """mean(softplus(-z) positive + softplus(z) negative): binary cross-entropy against weighted soft targets (with
    positive = y and negative = 1 - y, `F.binary_cross_entropy_with_logits`)."""
    logits = logits.float()
    return (F.softplus(-logits) * positive + F.softplus(logits) * negative).mean()


def teacher_from_checkpoint(hparams: dict, state: dict, name: str = "teacher") -> Teacher:
    """A frozen `Teacher` from a checkpoint's hyperparameters and its network's weights."""
    from datamodules.frontend import MelConfig, build_frontend
    from lightning_modules.registry import build_network

    network = build_network(hparams["network_config"])
    network.load_state_dict(state)
    frontend = hparams.get("frontend")
    return Teacher(network, build_frontend(MelConfig.from_dict(dict(frontend)) if frontend is not None else None),
                   int(hparams["layout"]["segment_samples"]), name)


def shared(value) -> _Shared:
    """`value` held so that a deep copy of its holder shares it (see `_Shared`)."""
    return _Shared(value)
