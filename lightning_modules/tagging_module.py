"""TaggingModule: the LightningModule shared by every architecture.

It builds its network from `network_config` (or is handed one); trains with binary cross-entropy on logits and SGD
(the paper's lr 0.01, momentum 0.9 by default; the learning-rate schedule lives in
`callbacks/`); and evaluates at clip level: segment probabilities (sigmoid of the logits) are
averaged per clip before any metric. Each validation chooses per-tag thresholds where
TPR = 1 - FPR (paper §4.6) and stores them in the `thresholds` buffer, so the best checkpoint
carries the thresholds of its own validation, and testing applies them (Table 4). Beside them, the
`threshold_fallback` buffer records which tags had no validation positive (or negative) to choose a
threshold from, and so kept 0.5 (`metrics.threshold_fallbacks`); a checkpoint saved before that
record existed loads with it derived: a threshold other than 0.5 was chosen, one of exactly 0.5 is
marked unknown (`metrics.derived_fallback_record`: a chosen threshold can be 0.5 too).

A run with teachers (`--teacher`) holds them beside the network (`teacher`, a
`lightning_modules.distillation.TeacherEnsemble`), not in it: they are no hyperparameter and no part of
the state dict, so a checkpoint is the student alone, loads and tags as any other, and a resumed run
gets its teachers again from its configuration. In training they label each batch's clean crop before
augmentation, and the loss mixes their probabilities with the true tags (`lightning_modules.distillation`).

Everything `--tag` needs to use a checkpoint without the data module (network config, tag list,
frontend settings, segment layout, thresholds) is saved with it, so Lightning's own
`TaggingModule.load_from_checkpoint(path)` rebuilds the network from those hyperparameters
(`from_checkpoint` adds one-line errors for unreadable files). Each architecture also has a named
subclass with its publication's defaults (`lightning_modules/architectures.py`).
"""

from __future__ import annotations

import sys
from pathlib import Path

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric

from infrastructure.audio import SAMPLE_RATE
from infrastructure.errors import ConfigError, DataError, SuiteError
from lightning_modules.metrics import (
    DEFAULT_THRESHOLD,
    THRESHOLD_FELL_BACK,
    ClipPredictions,
    TaggingReport,
    derived_fallback_record,
    equal_error_thresholds,
    tagging_metrics,
    threshold_fallbacks,
)
from lightning_modules.optimization import NONFINITE_ACTIONS, OPTIMIZERS, build_optimizer
from lightning_modules.registry import build_network

# "stop" checks the training losses every this many steps (and before each validation, at each epoch
# end): one host sync per window instead of one per step.
NONFINITE_CHECK_EVERY = 50


class NonFiniteLossError(SuiteError):
    """Training produced a NaN or infinite loss."""


class TaggingModule(pl.LightningModule):
    """Multi-label tagger around any network that maps the frontend's output to tag logits.

    Args:
        network: the architecture (an `nn.Module` returning logits of shape (batch, n_tags)); None
            (what loading a checkpoint passes) builds it from `network_config`. Not a hyperparameter.
        network_config: `{"name": ..., "kwargs": {...}}` that rebuilds `network` from the registry.
        tags: the tag names, in the order of the network's outputs.
        frontend: Mel settings (`MelConfig.to_dict()`) the network's input was computed with,
            or None for raw waveforms.
        layout: segment layout (`SegmentLayout.to_dict()`) used for training and evaluation.
        sample_rate: sample rate of the waveforms the model was trained on.
        optimizer: "sgd" (the paper's), "adam" (trains the LSTM far faster from raw log-Mel input) or "adamw".
        lr, momentum, weight_decay, nesterov: optimiser settings (paper: SGD, 0.01, 0.9, 0, no Nesterov;
            momentum and nesterov apply to SGD only).
        mixup_alpha, freq_mask, time_mask, n_masks: the modern recipe's training-only augmentation
            (`lightning_modules/augmentation.py`; 0 turns each off; the masks need a Mel frontend).
        nonfinite_loss: "stop" (raise, naming the first non-finite step, at the next check: every
            `NONFINITE_CHECK_EVERY` steps, before each validation and at each epoch end, so no
            checkpoint holds weights trained on it) or "skip" (drop the batch and go on; checks every
            step, a host sync per step).
    """

    def __init__(self, network: nn.Module | None = None, network_config: dict | None = None,
                 tags: list[str] | None = None, frontend: dict | None = None, layout: dict | None = None,
                 sample_rate: int = SAMPLE_RATE, optimizer: str = "sgd", lr: float = 0.01, momentum: float = 0.9,
                 weight_decay: float = 0.0, nesterov: bool = False, nonfinite_loss: str = "stop",
                 mixup_alpha: float = 0.0, freq_mask: float = 0.0, time_mask: float = 0.0, n_masks: int = 2):
        super().__init__()
        if network_config is None or tags is None or layout is None:
            raise ConfigError(f"{type(self).__name__} needs network_config, tags and layout (or use the "
                              "architecture's own module, e.g. MelCNNModule(), which has defaults for them)")
        if nonfinite_loss not in NONFINITE_ACTIONS:
            raise ConfigError(f"unknown non-finite loss action {nonfinite_loss!r}; choose {', '.join(NONFINITE_ACTIONS)}")
        if optimizer not in OPTIMIZERS:
            raise ConfigError(f"unknown optimizer {optimizer!r}; choose {', '.join(OPTIMIZERS)}")
        if (freq_mask or time_mask) and frontend is None:
            raise ConfigError("SpecAugment (--freq-mask, --time-mask) masks a spectrogram: it applies to Mel models "
                              "only, this one reads waveforms")
        # An explicit dict, not Lightning's frame inspection: a subclass's own defaults (None) must not
        # overwrite the values resolved here, or load_from_checkpoint would rebuild another model.
        self.save_hyperparameters({
            "network_config": network_config, "tags": list(tags), "frontend": frontend, "layout": dict(layout),
            "sample_rate": sample_rate, "optimizer": optimizer, "lr": lr, "momentum": momentum,
            "weight_decay": weight_decay, "nesterov": nesterov, "nonfinite_loss": nonfinite_loss,
            "mixup_alpha": mixup_alpha, "freq_mask": freq_mask, "time_mask": time_mask, "n_masks": n_masks})
        self.network = network if network is not None else build_network(network_config)
        n_tags = len(tags)
        self.register_buffer("thresholds", torch.full((n_tags,), DEFAULT_THRESHOLD))
        # int8 THRESHOLD_* codes: nothing is chosen before the first validation
        self.register_buffer("threshold_fallback", torch.full((n_tags,), THRESHOLD_FELL_BACK, dtype=torch.int8))
        self.val_loss = MeanMetric()
        self.test_loss = MeanMetric()
        self.val_predictions = ClipPredictions(num_tags=n_tags)
        self.test_predictions = ClipPredictions(num_tags=n_tags)
        self.skipped_batches = 0
        self._drop_gradients = False  # set by a skipped training batch, for on_before_optimizer_step
        self._window_losses: torch.Tensor | None = None  # "stop": the losses of the steps not yet checked
        self._window_steps: list[tuple[int, int, int]] = []  # their (global step, epoch, batch index)
        self.last_val_report: TaggingReport | None = None
        self.last_test_report: TaggingReport | None = None
        self.optimizer_source = None
        """What chooses the optimiser when the schedule changes it (`callbacks.schedules.build_schedule`); None:
        the module's own, always."""
        self.__dict__["_teacher"] = None  # outside the module tree: see `teacher`

    @property
    def teacher(self):
        """The run's teachers (`lightning_modules.distillation.TeacherEnsemble`), or None: training on the tags alone."""
        held = self.__dict__.get("_teacher")
        return held.value if held is not None else None

    def set_teacher(self, teacher) -> None:
        """Give the module its teachers. Held outside the module tree (not `self.teacher = ...`, which would register
        them): not in the state dict or the optimiser, not wrapped or synchronised by DDP, and shared, not copied,
        by the EMA's copy of the module."""
        from lightning_modules.distillation import shared

        self.__dict__["_teacher"] = shared(teacher) if teacher is not None else None

    @property
    def tags(self) -> list[str]:
        return list(self.hparams.tags)

    def forward(self, model_input: torch.Tensor) -> torch.Tensor:
        """Tag logits for a batch of frontend outputs (log-Mel or waveform segments)."""
        return self.network(model_input)

    # ---- one step for every stage -------------------------------------------------------------
    def _step(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self(batch["input"])
        if "positive" in batch:  # a training batch with teachers: soft targets (lightning_modules/distillation.py)
            from lightning_modules.distillation import soft_binary_cross_entropy

            return soft_binary_cross_entropy(logits, batch["positive"], batch["negative"]), logits
        loss = F.binary_cross_entropy_with_logits(logits.float(), batch["target"].float())
        return loss, logits

    def _augment(self, batch: dict) -> dict:
        """The `modern` recipe's mixup and SpecAugment (lightning_modules/augmentation.py); training only.

        Runs after the frontend and after `StepSeeds` reseeded this step, so its draws are reproducible.
        A trailing batch of one example (the loaders keep partial batches) is left unmixed: mixing an
        example with itself gives the example, which is what mixup's pairing would give it. With teachers,
        their soft targets (computed before, on the clean crop) are mixed with the same weight and pairing.
        """
        hp = self.hparams
        mix, mask = hp.get("mixup_alpha", 0.0), hp.get("freq_mask", 0.0) or hp.get("time_mask", 0.0)
        if not mix and not mask:
            return batch
        from lightning_modules.augmentation import mixup, spec_augment

        inputs, targets = batch["input"], batch["target"]
        if mask:
            inputs = spec_augment(inputs, hp.freq_mask, hp.time_mask, hp.n_masks)
        if mix and len(inputs) > 1:
            if "positive" in batch:
                inputs, targets, positive, negative = mixup(inputs, targets, hp.mixup_alpha, batch["positive"],
                                                            batch["negative"])
                return {**batch, "input": inputs, "target": targets, "positive": positive, "negative": negative}
            inputs, targets = mixup(inputs, targets, hp.mixup_alpha)
        return {**batch, "input": inputs, "target": targets}

    def training_step(self, batch: dict, batch_idx: int):
        teacher = self.teacher
        if teacher is not None:  # the teachers read the clean crop, before any augmentation
            batch = teacher.soft_targets(batch)
        batch = self._augment(batch)
        loss, _ = self._step(batch)
        if self.hparams.nonfinite_loss == "skip":
            if not self._all_finite(loss):
                self.skipped_batches += 1
                self.log("train/skipped_batches", float(self.skipped_batches), on_step=True, on_epoch=False)
                return self._skipped_batch_loss()
        else:
            self._record_loss(loss, batch_idx)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(batch["target"]))
        return loss

    # ---- non-finite losses -------------------------------------------------------------------------
    def _all_finite(self, loss: torch.Tensor) -> bool:
        """True when the loss is finite on every process (a host sync: "skip" must decide before the backward)."""
        finite = bool(torch.isfinite(loss))
        trainer = self._trainer
        if trainer is not None and trainer.world_size > 1:
            # Every process must take the same branch: one that skipped the backward pass would leave the
            # others waiting for it in DDP's gradient all-reduce.
            finite = trainer.strategy.reduce_boolean_decision(finite, all=True)
        return finite

    def _record_loss(self, loss: torch.Tensor, batch_idx: int) -> None:
        """"stop": keep the loss on its device and check a window of steps at once, so that a step never
        waits for the GPU (a per-step `bool(loss)` would stall the host until the step has run).
        Checked every `NONFINITE_CHECK_EVERY` steps, before each validation and at the end of each
        epoch and of training: a non-finite loss stops the run before any checkpoint holds its weights."""
        if self._window_losses is None or self._window_losses.device != loss.device:
            self._window_losses = torch.empty(NONFINITE_CHECK_EVERY, dtype=torch.float32, device=loss.device)
        self._window_losses[len(self._window_steps)] = loss.detach()
        self._window_steps.append((self.global_step, self.current_epoch, batch_idx))
        if len(self._window_steps) == NONFINITE_CHECK_EVERY:
            self._check_window()

    def _check_window(self) -> None:
        """Raise `NonFiniteLossError` naming the first non-finite step of the window (on any process).

        Every process calls this at the same points (the same step counts, validation start, epoch
        end), so the gather below is matched on every rank.
        """
        steps, self._window_steps = self._window_steps, []
        if not steps:
            return
        window = self._window_losses[:len(steps)]
        finite = torch.isfinite(window)
        index = torch.arange(len(steps), device=window.device)
        local_first = torch.where(finite, len(steps), index).min()
        first_anywhere = self.all_gather(local_first).min() if self.trainer.world_size > 1 else local_first
        first, here = int(first_anywhere), int(local_first)
        if first == len(steps):
            return
        step, epoch, batch_idx = steps[first]
        what = (f"training loss is {float(window[first])}" if here == first
                else "another process's training loss is not finite")
        raise NonFiniteLossError(
            f"{what} at global step {step} (epoch {epoch}, batch {batch_idx}); last good checkpoint: "
            f"{self._last_checkpoint() or 'none saved yet'}. "
            "Lower the learning rate, or pass --nonfinite-loss skip to drop such batches."
        )

    def on_validation_start(self) -> None:
        self._check_window()

    def on_train_epoch_end(self) -> None:
        self._check_window()  # before the epoch's checkpoints (ModelCheckpoint acts after this hook)

    def on_train_end(self) -> None:
        self._check_window()

    def _skipped_batch_loss(self) -> torch.Tensor:
        """What a skipped batch returns: a NaN whose gradient is zero for every parameter.

        Returning None (Lightning's way to skip) is refused under DDP, where every process must run
        the backward pass of every step for the gradient all-reduce. So each process back-propagates
        this instead (zero gradients reaching every parameter), and `on_before_optimizer_step` then
        drops the gradients, so the optimizer changes no weight, momentum or Adam moment. The NaN
        value keeps the batch out of the epoch's mean training loss.
        """
        self._drop_gradients = True
        zero = sum(p.sum() for p in self.parameters() if p.requires_grad) * 0.0
        return zero + float("nan")

    def on_before_optimizer_step(self, optimizer) -> None:
        if self._drop_gradients:
            self._drop_gradients = False
            optimizer.zero_grad(set_to_none=True)  # parameters without a gradient are left alone by the step

    def _last_checkpoint(self) -> str | None:
        trainer = self._trainer
        callback = trainer.checkpoint_callback if trainer is not None else None
        if callback is None:
            return None
        return getattr(callback, "last_model_path", None) or getattr(callback, "best_model_path", None) or None

    def _eval_step(self, batch: dict, loss_metric: MeanMetric, predictions: ClipPredictions) -> None:
        loss, logits = self._step(batch)
        loss_metric.update(loss, weight=len(batch["target"]))
        predictions.update(torch.sigmoid(logits.float()), batch["target"], batch["clip"], batch["segment"])

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, self.val_loss, self.val_predictions)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, self.test_loss, self.test_predictions)

    # ---- clip-level metrics at the end of each evaluation ------------------------------------
    def on_validation_epoch_end(self) -> None:
        # compute() gathers across ranks; every rank gets the same values, so no extra sync is needed.
        self.log("val/loss", self.val_loss.compute(), prog_bar=True, sync_dist=False)
        self.val_loss.reset()
        probs, targets, _ = self.val_predictions.compute()
        self.val_predictions.reset()
        if self.trainer.sanity_checking:
            return
        report = tagging_metrics(probs, targets, self.tags)
        self.thresholds.copy_(equal_error_thresholds(probs, targets).to(self.thresholds))
        self.threshold_fallback.copy_(threshold_fallbacks(targets).to(self.threshold_fallback))
        self.last_val_report = report
        self.log("val/roc_auc", report.roc_auc, prog_bar=True)
        self.log("val/pr_auc", report.pr_auc)

    def on_test_epoch_end(self) -> None:
        self.log("test/loss", self.test_loss.compute())
        self.test_loss.reset()
        probs, targets, _ = self.test_predictions.compute()
        self.test_predictions.reset()
        report = tagging_metrics(probs, targets, self.tags, thresholds=self.thresholds,
                                 threshold_fell_back=self.threshold_fallback)
        self.last_test_report = report
        for name in ("roc_auc", "pr_auc", "tpr", "fpr"):
            self.log(f"test/{name}", getattr(report, name))

    # ---- optimisation ------------------------------------------------------------------------------
    def configure_optimizers(self):
        """The optimiser the options name, or the one `optimizer_source` names for the current point of the
        schedule (Won et al.'s stages: their state is restored before this is called, so a run resumed in an SGD
        stage gets SGD)."""
        if self.optimizer_source is not None:
            return self.optimizer_source.optimizer_for(self, self._own_optimizer)
        return self._own_optimizer()

    def _own_optimizer(self):
        hp = self.hparams
        return build_optimizer(self.network.parameters(), hp.optimizer, lr=hp.lr, momentum=hp.momentum,
                               weight_decay=hp.weight_decay, nesterov=hp.nesterov)

    # ---- consistency with the data ----------------------------------------------------------------
    def _check_datamodule(self) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is None:
            return
        frontend = datamodule.frontend_config.to_dict() if datamodule.frontend_config is not None else None
        if frontend != self.hparams.frontend:
            raise ConfigError(f"the model expects frontend {self.hparams.frontend}, the data module gives {frontend}")
        if tuple(datamodule.tags) != tuple(self.tags):
            raise ConfigError(
                f"the model was built for {len(self.tags)} tags ({', '.join(self.tags[:5])}, ...), the data module "
                f"provides {len(datamodule.tags)} ({', '.join(datamodule.tags[:5])}, ...): use the same --tags vocabulary")
        if datamodule.layout.to_dict() != dict(self.hparams.layout):
            raise ConfigError(f"the model expects segments {dict(self.hparams.layout)}, "
                              f"the data module gives {datamodule.layout.to_dict()}")

    def on_fit_start(self) -> None:
        self._check_datamodule()
        if self.teacher is not None:
            self.teacher.to(self.device)
            self._label_fixed_crops_once()

    def _label_fixed_crops_once(self) -> None:
        """With fixed training crops, the teachers label each crop once (`TeacherEnsemble.label_once`)."""
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is None or getattr(datamodule, "unlabeled", None) is not None:
            return
        dataset = datamodule.dataset("train")
        if not getattr(dataset, "fixed_crops", False):
            return
        if self.trainer.is_global_zero:
            print(f"teachers: labelling the {len(dataset)} fixed training crops once (every epoch reads them)",
                  file=sys.stderr, flush=True)
        self.teacher.label_once(dataset, datamodule.hparams.eval_batch_size or datamodule.hparams.batch_size,
                                self.device)

    def on_test_start(self) -> None:
        self._check_datamodule()

    # ---- checkpoints --------------------------------------------------------------------------------
    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """A state dict saved before `threshold_fallback` existed gets it derived from its thresholds (see the
        module docstring). Here rather than in `load_state_dict`, so every way in (Lightning's restore, the
        global-decay restart, an EMA average wrapping this module) is covered."""
        key, thresholds = prefix + "threshold_fallback", state_dict.get(prefix + "thresholds")
        if key not in state_dict and thresholds is not None:
            state_dict[key] = derived_fallback_record(thresholds).to(thresholds.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @classmethod
    def from_checkpoint(cls, path: str | Path, map_location: str | torch.device = "cpu") -> TaggingModule:
        """Rebuild the network from the checkpoint's hyperparameters and load its weights."""
        path = Path(path)
        if not path.is_file():
            raise DataError(f"{path}: checkpoint not found")
        try:
            checkpoint = torch.load(path, map_location=map_location, weights_only=False)
        except Exception as error:  # a truncated or foreign file
            raise DataError(f"{path}: not a readable checkpoint ({error.__class__.__name__}: {error})") from None
        hparams = checkpoint.get("hyper_parameters") or {}
        if "network_config" not in hparams or "tags" not in hparams:
            raise DataError(f"{path}: not a checkpoint of this suite (no network config or tag list in it)")
        module = cls(**hparams)
        module.load_state_dict(checkpoint["state_dict"])
        module.eval()
        return module

