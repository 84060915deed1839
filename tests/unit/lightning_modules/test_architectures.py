"""One named LightningModule per architecture (issue: "LightningModules for each architecture")."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch

from datamodules.datamodule import MTATDataModule
from infrastructure.errors import ConfigError
from lightning_modules.architectures import MODULES, LSTMMelModule, MelCNNModule, default_hparams, module_class
from lightning_modules.registry import MODELS
from lightning_modules.tagging_module import TaggingModule
from tests.support.helpers import TINY_CLIP_SAMPLES


def test_every_registered_model_has_its_own_module_class():
    assert set(MODULES) == set(MODELS)
    for name, cls in MODULES.items():
        assert issubclass(cls, TaggingModule) and cls.MODEL == name and module_class(name) is cls
    with pytest.raises(ConfigError, match="unknown model 'resnet9000'"):
        module_class("resnet9000")


@pytest.mark.parametrize("name", sorted(MODULES))
def test_a_module_with_no_arguments_is_a_working_untrained_model(name):
    module = MODULES[name]()
    hp = default_hparams(name)
    assert module.hparams.network_config == hp["network_config"] and len(module.tags) == 50
    assert dict(module.hparams.layout) == hp["layout"]
    shape = (2, hp["layout"]["segment_samples"]) if hp["frontend"] is None else \
        (2, hp["network_config"]["kwargs"]["n_mels"], hp["network_config"]["kwargs"]["n_frames"])
    with torch.no_grad():
        module.eval()
        assert module(torch.randn(shape)).shape == (2, 50)


def test_load_from_checkpoint_restores_a_trained_module_without_the_data(tmp_path):
    module = MelCNNModule(tags=["rock", "piano", "vocal"])
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.01)
    module.thresholds.fill_(0.3)
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, max_epochs=0)
    trainer.strategy.connect(module)
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    for loader in (MelCNNModule, TaggingModule):  # Lightning's own loader, the named class and the base
        restored = loader.load_from_checkpoint(path)
        assert restored.tags == ["rock", "piano", "vocal"] and torch.allclose(restored.thresholds, module.thresholds)
        for (key, a), (_, b) in zip(module.state_dict().items(), restored.state_dict().items()):
            assert torch.equal(a, b), key
    with pytest.raises(ConfigError, match="MelCNNModule"):
        LSTMMelModule.load_from_checkpoint(path)


@pytest.mark.slow
def test_a_module_trains_with_a_plain_trainer_and_the_datamodule(tmp_path, tiny_cache):
    """docs/architecture.md's "Using a module directly" example, on the tiny generated data."""
    hp = default_hparams("lstm_mel", clip_samples=TINY_CLIP_SAMPLES)
    datamodule = MTATDataModule(data_dir="synthetic", cache_root=str(tiny_cache.cache_dir), layout=hp["layout"],
                                frontend=hp["frontend"], batch_size=16, num_workers=0,
                                synthetic=tiny_cache.synthetic, progress=False)
    datamodule.prepare_data()
    tags = list(datamodule.dataset_info().tags)
    hp = default_hparams("lstm_mel", tags=tags, clip_samples=TINY_CLIP_SAMPLES)
    model = LSTMMelModule(**hp, optimizer="adam", lr=0.001)
    trainer = pl.Trainer(max_epochs=1, limit_train_batches=3, limit_val_batches=2, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         use_distributed_sampler=False)
    before = [p.detach().clone() for p in model.parameters()]
    trainer.fit(model, datamodule=datamodule)
    assert trainer.global_step == 3 and model.last_val_report is not None
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))  # it trained
