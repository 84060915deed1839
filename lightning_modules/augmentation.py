"""Training-time augmentation of the `modern` recipe: mixup and SpecAugment's masks, on the batch's device.

Both run inside `TaggingModule.training_step`, after the data module's frontend has made the
log-Mel batch (`on_after_batch_transfer`) and after `callbacks.step_seeds.StepSeeds` has reseeded
the global generators for this step (`on_train_batch_start` comes after the batch transfer), so
every draw below is a function of (seed, epoch, batch, rank): reruns and resumed runs augment
identically. Evaluation never augments.

* `mixup` (Zhang et al. 2018): one mixing weight lam ~ Beta(alpha, alpha) per batch and a random
  pairing; inputs and multi-hot targets are mixed with the same weight, so the binary
  cross-entropy is taken against soft targets.
* `spec_augment` (Park et al. 2019, without time warping): `n_masks` frequency bands and `n_masks`
  time spans per example, each of a width drawn uniformly from 0 to the given fraction of the
  axis. The masked cells get the example's mean value rather than torchaudio's 0: the suite's
  log-Mel is in dB (or log1p, or linear), where 0 is not "nothing" but an arbitrary level. The
  masks act on a spectrogram, so they apply to Mel models only (a waveform model's input has no
  frequency axis; `harmonic_cnn` builds its spectrogram inside the network).
"""

from __future__ import annotations

import torch

from infrastructure.errors import ConfigError


def mixup(inputs: torch.Tensor, targets: torch.Tensor, alpha: float,
          *more: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(lam x + (1 - lam) x[perm], lam y + (1 - lam) y[perm], ...) with lam ~ Beta(alpha, alpha), perm random.

    `more`: further per-example tensors mixed with the same weight and pairing (float32), e.g. distillation's
    per-example loss terms, whose mixture is the mixture of the two examples' losses (`lightning_modules.distillation`);
    they draw no random number, so the inputs and targets mix as without them.
    """
    if len(inputs) < 2:
        raise ConfigError(f"mixup needs at least 2 examples per batch to mix, got {len(inputs)} "
                          "(use a --batch-size of 2 or more, or --mixup-alpha 0)")
    if alpha <= 0:
        raise ConfigError(f"--mixup-alpha must be positive to mix, got {alpha}")
    lam = torch.distributions.Beta(float(alpha), float(alpha)).sample()  # CPU generator, reseeded per step
    perm = torch.randperm(len(inputs)).to(inputs.device)
    lam_x = lam.to(device=inputs.device, dtype=inputs.dtype)
    lam_y = lam.to(device=targets.device, dtype=torch.float32)
    mixed_inputs = lam_x * inputs + (1 - lam_x) * inputs[perm]
    mixed_targets = lam_y * targets.float() + (1 - lam_y) * targets.float()[perm]
    mixed_more = tuple(lam_y * m.float() + (1 - lam_y) * m.float()[perm] for m in more)
    return (mixed_inputs, mixed_targets, *mixed_more)


def _band_masks(n: int, size: int, max_width: int, n_masks: int, device) -> torch.Tensor:
    """(n, size) bool: the union of `n_masks` spans per row, widths uniform in [0, max_width]."""
    width = torch.floor(torch.rand(n, n_masks, device=device) * (max_width + 1))
    start = torch.floor(torch.rand(n, n_masks, device=device) * (size - width + 1))
    index = torch.arange(size, device=device).view(1, 1, size)
    inside = (index >= start.unsqueeze(-1)) & (index < (start + width).unsqueeze(-1))
    return inside.any(dim=1)


def spec_augment(mel: torch.Tensor, freq_mask: float, time_mask: float, n_masks: int) -> torch.Tensor:
    """Frequency and time masks on a (batch, n_mels, frames) batch (see the module docstring)."""
    if mel.dim() != 3:
        raise ConfigError(f"SpecAugment needs a (batch, n_mels, frames) spectrogram, got shape {tuple(mel.shape)}")
    n, bands, frames = mel.shape
    masked = torch.zeros(n, bands, frames, dtype=torch.bool, device=mel.device)
    if freq_mask > 0:
        masked |= _band_masks(n, bands, int(freq_mask * bands), n_masks, mel.device).unsqueeze(2)
    if time_mask > 0:
        masked |= _band_masks(n, frames, int(time_mask * frames), n_masks, mel.device).unsqueeze(1)
    fill = mel.mean(dim=(1, 2), keepdim=True)
    return torch.where(masked, fill, mel)
