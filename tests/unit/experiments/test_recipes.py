"""Training recipes (`--recipe paper|won2020|modern`): resolution and overrides, their schedules and augmentation
against closed forms, the EMA's use in evaluation, bad input, and (slow) the paper recipe's unchanged results and a
one-trial sweep of the modern recipe. Exact resume of each recipe: tests/integration/test_resume.py."""

from __future__ import annotations

import dataclasses
import math
import warnings

import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

import run
from callbacks.ema import EMAWeights
from callbacks.recipe_schedules import WarmupCosine, Won2020Stages, warmup_cosine_factor
from experiments.cli import parse_command
from experiments.legacy import ADDED_OPTIONS
from experiments.options import RunOptions
from experiments.recipes import RECIPES
from experiments.run_folder import config_digest
from infrastructure.errors import ConfigError
from lightning_modules.augmentation import mixup, spec_augment
from lightning_modules.registry import MODELS
from lightning_modules.tagging_module import TaggingModule
from tests.support.helpers import TINY_MEL_ARGS, read_metrics, run_options
from tests.support.tiny_lightning import Recorder, TinyModule, make_loader, make_trainer, weights_equal

PAPER_MODELS = ("sample_cnn", "sample_cnn_frames", "mel_cnn", "lstm_mel")


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
        warnings.filterwarnings("ignore", message=".*self.log.*")
        yield


# ---- resolution ----------------------------------------------------------------------------------------
def test_paper_recipe_is_the_declared_defaults_and_each_model_has_its_recipe():
    defaults = {f.name: f.default for f in dataclasses.fields(RunOptions)}
    # Every recipe sets one random crop per clip (an epoch is one pass over the training clips); the declared
    # default, None, keeps its meaning for runs made before (--segments-per-clip crops), so it differs there.
    paper = {k: v for k, v in RECIPES["paper"].items() if k != "random_crops_per_clip"}
    assert {k: defaults[k] for k in paper} == paper
    assert all(values["random_crops_per_clip"] == 1 for values in RECIPES.values())
    for name, spec in MODELS.items():
        assert spec.recipe == ("paper" if name in PAPER_MODELS else "won2020"), name


@pytest.mark.parametrize("model", PAPER_MODELS)
def test_paper_recipe_keeps_the_run_folder_name_and_adds_nothing_to_the_digest(model):
    plain, paper = run_options(model=model), run_options("--recipe", "paper", model=model)
    assert config_digest(plain) == config_digest(paper) and plain.recipe == paper.recipe == "paper"
    new = set(ADDED_OPTIONS) - {"width"}
    if plain.random_crops_per_clip is not None:
        # a random-crop model (sample_cnn_frames) now trains on one crop per clip an epoch, where runs made before
        # drew --segments-per-clip crops: a different run, so a different folder name
        assert model == "sample_cnn_frames" and plain.random_crops_per_clip == 1
        new -= {"random_crops_per_clip"}
    assert not (set(plain.to_dict()) & (new - {"recipe"}))  # at the paper's values no other new key enters it


def test_recipe_defaults_resolve_and_explicit_flags_and_config_files_override(tmp_path):
    won = run_options(model="short_chunk_cnn")
    assert (won.recipe, won.optimizer, won.lr, won.weight_decay, won.schedule, won.nesterov) == (
        "won2020", "adam", 1e-4, 1e-4, "won2020", True)
    assert (won.stage_epochs, won.stage_lrs, won.max_epochs, won.train_crop, won.monitor) == (
        (80, 20, 20), (1e-3, 1e-4, 1e-5), 200, "random", "val/loss")
    assert won.random_crops_per_clip == 1 and won.segments_per_clip is None  # Won's epoch: one chunk per clip
    fixed = run_options("--train-crop", "fixed", model="short_chunk_cnn")
    assert (fixed.train_crop, fixed.random_crops_per_clip) == ("fixed", None)  # trains on the 16 fixed chunks
    assert run_options("--random-crops-per-clip", "4", model="short_chunk_cnn").random_crops_per_clip == 4
    # every recipe's epoch is one pass over the training clips: one crop each (modern drew 16 before)
    assert run_options("--recipe", "modern", model="short_chunk_cnn").random_crops_per_clip == 1
    modern = run_options("--recipe", "modern", "--lr", "0.003", "--mixup-alpha", "0", model="mel_cnn")
    assert (modern.optimizer, modern.lr, modern.mixup_alpha, modern.schedule, modern.warmup) == (
        "adamw", 0.003, 0.0, "cosine", 0.05)
    assert (modern.freq_mask, modern.time_mask, modern.ema_decay, modern.gradient_clip) == (0.15, 0.1, 0.999, 1.0)
    assert modern.precision == ("bf16-mixed" if torch.cuda.is_available() else "32")
    assert run_options("--recipe", "modern", "--accelerator", "cpu", model="mel_cnn").precision == "32"
    waveform = run_options("--recipe", "modern", model="sample_cnn")
    assert (waveform.freq_mask, waveform.time_mask, waveform.mixup_alpha) == (0.0, 0.0, 0.2)  # no masks: no Mel
    config = tmp_path / "exp.yaml"
    config.write_text("recipe: modern\nlr: 0.002\nstage_epochs: [1, 2]\n")
    from_file = run.parse_options(["--config", str(config), "--model", "mel_cnn", "--warmup", "0.1"])
    assert (from_file.lr, from_file.warmup, from_file.optimizer, from_file.stage_epochs) == (0.002, 0.1, "adamw", (1, 2))
    # the saved options (config.yaml) run as they are: the same resolved values, the same digest
    from experiments.cli import dump_yaml
    saved = tmp_path / "config.yaml"
    saved.write_text(dump_yaml(modern))
    again = run.parse_options(["--config", str(saved)])
    assert again == modern and config_digest(again) == config_digest(modern)
    assert RunOptions.from_dict(modern.to_dict()) == modern  # config.json (lists) back to the same options
    sweep = parse_command(["--sweep", "mel_cnn", "--recipe", "modern"]).run
    assert sweep.optimizer == "adamw" and "optimizer" not in parse_command(["--sweep", "mel_cnn"]).given


# ---- bad input: one line, before any data -------------------------------------------------------------
@pytest.mark.parametrize("argv,message", [
    (["--model", "mel_cnn", "--recipe", "modern", "--batch-size", "1"], "--batch-size 2 or more"),
    (["--model", "sample_cnn", "--freq-mask", "0.2"], "sample_cnn reads waveforms"),
    (["--model", "mel_cnn", "--recipe", "modern", "--patience", "3"], "--patience belong to --schedule paper"),
    (["--model", "short_chunk_cnn", "--ema-decay", "0.99"], "--ema-decay does not go with"),
    (["--model", "mel_cnn", "--stage-epochs", "1,1"], "apply to --schedule won2020"),
    (["--model", "mel_cnn", "--recipe", "won2020", "--stage-epochs", "1,1"], "one value each per stage switch"),
    (["--model", "mel_cnn", "--recipe", "modern", "--time-mask", "1.5"], "in [0, 1)"),
    (["--model", "mel_cnn", "--random-crops-per-clip", "2"], "--random-crops-per-clip applies to --train-crop random"),
    (["--model", "short_chunk_cnn", "--train-crop", "fixed", "--random-crops-per-clip", "2"], "trains on fixed"),
])
def test_recipe_options_that_cannot_apply_fail_in_one_line_before_the_data(argv, message, tmp_path, capsys):
    missing = tmp_path / "no-such-mtat"  # a check after data preparation would complain about this folder instead
    try:  # a value out of its declared range is a usage error of the parser (SystemExit); the rest are returned
        code = run.main([*argv, "--data", str(missing), "--runs-root", str(tmp_path)])
    except SystemExit as exit_:
        code = exit_.code
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and not missing.exists()


def test_unknown_recipe_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        run.main(["--model", "mel_cnn", "--recipe", "fancy"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "fancy" in err and "--recipe" in err and len(err.splitlines()) == 1


# ---- schedules -------------------------------------------------------------------------------------------
def test_warmup_cosine_rates_follow_the_closed_form_across_epochs():
    rec = Recorder()
    model = TinyModule(lrs=(0.01, 0.04))
    make_trainer([WarmupCosine(warmup=0.2), rec], max_epochs=3).fit(model, make_loader(), make_loader())
    total, warmup = 15, 3  # 5 batches x 3 epochs; 20% of them
    assert len(rec.step_lrs) == total
    for step, (_, lrs) in enumerate(rec.step_lrs):
        if step < warmup:
            want = (step + 1) / warmup
        else:
            want = 0.5 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))
        assert lrs == pytest.approx([0.01 * want, 0.04 * want], rel=1e-12), step
    assert rec.step_lrs[warmup][1] == pytest.approx([0.01, 0.04]) and rec.step_lrs[-1][1][0] < 0.001
    assert warmup_cosine_factor(15, 15, 3) == pytest.approx(0.0, abs=1e-15)


class _OptimizerRecorder(Recorder):
    """Also records which optimiser took each step."""

    def __init__(self):
        super().__init__()
        self.optimizers = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        super().on_before_optimizer_step(trainer, pl_module, optimizer)
        self.optimizers.append((trainer.current_epoch, optimizer))


# epoch:   0    1    2    3    4    5    6    7
WON_SCRIPT = [1.0, 0.8, 0.9, 0.7, 0.95, 0.6, 0.99, 0.5]


def test_won2020_stages_reload_the_best_weights_and_switch_optimiser_at_their_epochs(capsys):
    rec = _OptimizerRecorder()
    stages = Won2020Stages(stage_epochs=(3, 2, 2), stage_lrs=(1e-3, 1e-4, 1e-5), momentum=0.9, weight_decay=1e-4)
    model = TinyModule(val_losses=WON_SCRIPT)
    model.configure_optimizers = lambda: torch.optim.Adam(model.parameters(), lr=1e-4, weight_decay=1e-4)
    trainer = make_trainer([stages, rec], max_epochs=len(WON_SCRIPT))
    trainer.fit(model, make_loader(), make_loader())
    assert stages.switch_epochs() == [2, 4, 6] and stages.stage == 3
    kinds = {epoch: type(opt).__name__ for epoch, opt in rec.optimizers}
    assert [kinds[e] for e in range(8)] == ["Adam"] * 3 + ["SGD"] * 5
    by_epoch = {}
    for epoch, lrs in rec.step_lrs:
        by_epoch.setdefault(epoch, lrs[0])
    assert [by_epoch[e] for e in range(8)] == pytest.approx([1e-4] * 3 + [1e-3] * 2 + [1e-4] * 2 + [1e-5])
    sgd = trainer.optimizers[0]
    assert sgd.param_groups[0]["nesterov"] and sgd.param_groups[0]["momentum"] == 0.9
    assert sgd.param_groups[0]["weight_decay"] == 1e-4
    # each switch reloads the best weights so far (lowest val/loss): epoch 1's at 2, 3's at 4, 5's at 6
    for switch, best in ((2, 1), (4, 3), (6, 5)):
        assert weights_equal(rec.post[switch]["weights"], rec.pre[best]["weights"])
        assert not weights_equal(rec.pre[switch]["weights"], rec.pre[best]["weights"])
    for epoch in (0, 1, 3, 5):  # no switch: nothing reloaded
        assert weights_equal(rec.post[epoch]["weights"], rec.pre[epoch]["weights"])
    # the later drops keep SGD's momentum (their code only rewrites lr): state survives the 2nd and 3rd switch
    assert rec.post[4]["opt_state_len"] > 0 and rec.post[2]["opt_state_len"] == 0
    state = stages.state_dict()
    fresh = Won2020Stages(stage_epochs=(3, 2, 2), stage_lrs=(1e-3, 1e-4, 1e-5))
    fresh.load_state_dict(state)
    assert fresh.stage == 3 and fresh.best_epoch == 7 and weights_equal(fresh.best_weights, stages.best_weights)
    built = fresh.optimizer_for(model, None)
    assert type(built).__name__ == "SGD" and built.param_groups[0]["lr"] == 1e-5
    err = capsys.readouterr().err  # progress messages: stderr
    assert "Won2020Stages: epoch 2: stage 1: reloaded the weights of epoch 1" in err and "lr 1e-05" in err


# ---- augmentation ----------------------------------------------------------------------------------------
def test_mixup_matches_its_closed_form_and_refuses_a_batch_of_one():
    x = torch.arange(4 * 3 * 5, dtype=torch.float32).view(4, 3, 5)
    y = torch.tensor([[1, 0], [0, 1], [1, 1], [0, 0]], dtype=torch.float32)
    torch.manual_seed(2)
    mixed_x, mixed_y = mixup(x, y, 0.4)
    torch.manual_seed(2)
    lam = torch.distributions.Beta(0.4, 0.4).sample()
    perm = torch.randperm(4)
    assert 0 < float(lam) < 1 and perm.tolist() != [0, 1, 2, 3]
    assert torch.allclose(mixed_x, lam * x + (1 - lam) * x[perm])
    assert torch.allclose(mixed_y, lam * y + (1 - lam) * y[perm])
    with pytest.raises(ConfigError, match="at least 2 examples"):
        mixup(x[:1], y[:1], 0.4)


def test_spec_augment_masks_are_bounded_filled_with_the_mean_and_deterministic_per_seed():
    mel = torch.randn(8, 40, 100)
    torch.manual_seed(1)
    a = spec_augment(mel, 0.2, 0.1, 2)
    torch.manual_seed(1)
    b = spec_augment(mel, 0.2, 0.1, 2)
    torch.manual_seed(2)
    c = spec_augment(mel, 0.2, 0.1, 2)
    assert torch.equal(a, b) and not torch.equal(a, c)
    changed = a != mel
    means = mel.mean(dim=(1, 2))
    for i in range(8):
        assert torch.allclose(a[i][changed[i]], means[i].expand(int(changed[i].sum())))
        full_bands = changed[i].all(dim=1).sum()  # masked frequency bands are masked at every frame
        full_frames = changed[i].all(dim=0).sum()
        assert full_bands <= 2 * 8 and full_frames <= 2 * 10  # two masks of at most 20% / 10% each
    assert changed.any()


class _Recording(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(100, 2)
        self.seen = []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        return self.linear(x.mean(dim=1))


def test_augmentation_runs_in_training_steps_only():
    net = _Recording()
    module = TaggingModule(network=net, network_config={"name": "x", "class": "x", "kwargs": {}}, tags=["a", "b"],
                           frontend={"n_mels": 40}, layout={"segment_samples": 1, "segments_per_clip": 1},
                           mixup_alpha=0.3, freq_mask=0.3, time_mask=0.2)
    batch = {"input": torch.randn(4, 40, 100), "target": torch.tensor([[1, 0], [0, 1], [1, 1], [0, 0]]),
             "clip": torch.arange(4), "segment": torch.zeros(4, dtype=torch.long)}
    module.training_step(batch, 0)
    module.validation_step(batch, 0)
    assert not torch.equal(net.seen[0], batch["input"]) and torch.equal(net.seen[1], batch["input"])
    with pytest.raises(ConfigError, match="Mel models only"):
        TaggingModule(network=net, network_config={}, tags=["a"], frontend=None, layout={}, freq_mask=0.1)


# ---- EMA ----------------------------------------------------------------------------------------------------
class _ThresholdModule(TinyModule):
    def __init__(self):
        super().__init__()
        self.register_buffer("thresholds", torch.zeros(1))
        self.validated_with = []

    def on_validation_epoch_start(self):
        self.validated_with.append({k: v.detach().clone() for k, v in self.named_parameters()})

    def on_validation_epoch_end(self):
        super().on_validation_epoch_end()
        self.thresholds.fill_(float(self.current_epoch) + 0.5)


def test_ema_weights_are_validated_checkpointed_and_left_in_the_model(tmp_path):
    model = _ThresholdModule()
    ema = EMAWeights(0.9)
    checkpoint = ModelCheckpoint(dirpath=tmp_path, monitor="val/loss", save_last=True)
    trainer = make_trainer([ema, checkpoint], max_epochs=2, enable_checkpointing=True)
    trainer.fit(model, make_loader(), make_loader())
    average = {k[len("module."):]: v for k, v in ema._average_model.state_dict().items() if k.startswith("module.")}
    last = validated = model.validated_with[-1]
    for name, value in last.items():
        assert torch.equal(value, average[name])  # validation saw the average...
    for name, value in model.named_parameters():
        assert torch.equal(value.detach(), average[name])  # ...and the model ends with it
    saved = torch.load(tmp_path / "last.ckpt", weights_only=False)
    assert torch.equal(saved["state_dict"]["first.weight"], validated["first.weight"])
    assert not torch.equal(saved["current_model_state"]["first.weight"], validated["first.weight"])
    assert float(saved["state_dict"]["thresholds"]) == 1.5  # the thresholds chosen for the averaged weights


def test_ema_decay_warms_up_like_tensorflows_num_updates_and_reaches_the_given_decay():
    from torch.optim.swa_utils import AveragedModel

    from callbacks.ema import warmed_up_ema

    model = torch.nn.Linear(1, 1, bias=False)
    average = AveragedModel(model, avg_fn=warmed_up_ema(0.9))
    expected = None
    for n, value in enumerate([1.0, 3.0, -2.0, 5.0] + [7.0] * 200):
        model.weight.data.fill_(value)
        average.update_parameters(model)
        decay = min(0.9, (1 + n) / (10 + n))  # update n sees n_averaged == n; update 0 copies the weights
        expected = value if n == 0 else decay * expected + (1 - decay) * value
        assert float(average.module.weight) == pytest.approx(expected, rel=1e-6), n
    assert min(0.9, (1 + 203) / (10 + 203)) == 0.9 and float(average.module.weight) == pytest.approx(7.0, abs=1e-6)


def test_ema_decay_is_checked():
    with pytest.raises(ConfigError, match="ema-decay"):
        EMAWeights(1.0)


# ---- slow: real runs ---------------------------------------------------------------------------------------
@pytest.mark.slow
def test_paper_recipe_run_equals_the_run_without_recipe(tiny_cache, tmp_path):
    base = ["--model", "mel_cnn", *tiny_cache.args(), *TINY_MEL_ARGS["mel_cnn"], "--max-epochs", "1",
            "--limit-train-batches", "3", "--logger", "none"]
    outcomes = []
    for name, extra in (("plain", []), ("paper", ["--recipe", "paper"])):
        assert run.main([*base, *extra, "--run-dir", str(tmp_path / name)]) == 0
        outcomes.append(read_metrics(tmp_path / name))
    assert outcomes[0]["test"] == outcomes[1]["test"] and outcomes[0]["thresholds"] == outcomes[1]["thresholds"]
    assert config_digest(run.parse_options(base)) == config_digest(run.parse_options([*base, "--recipe", "paper"]))


@pytest.mark.slow
def test_a_one_trial_sweep_of_the_modern_recipe(tiny_cache, tmp_path, capsys):
    argv = ["--sweep", "mel_cnn", "--recipe", "modern", *tiny_cache.args(), *TINY_MEL_ARGS["mel_cnn"],
            "--max-epochs", "1", "--limit-train-batches", "3", "--trials", "1", "--logger", "none",
            "--runs-root", str(tmp_path)]
    assert run.main(argv) == 0
    out = capsys.readouterr().out
    configs = list((tmp_path / "sweeps").glob("*/trials/*/config.json"))
    assert len(configs) == 1, out
    import json
    saved = json.loads(configs[0].read_text())
    assert saved["recipe"] == "modern" and saved["optimizer"] == "adamw" and saved["schedule"] == "cosine"
    assert 1e-4 <= saved["lr"] <= 1e-2  # the lr range follows the recipe's rate


def test_sweep_spaces_follow_the_recipes_schedule():
    from sweeps.spaces import baselines, build_space

    paper = build_space("lstm_mel", run_options(model="lstm_mel"), 465_984)
    modern_options = run_options("--recipe", "modern", model="lstm_mel")
    modern = build_space("lstm_mel", modern_options, 465_984)
    assert "global_decay" in paper.names and "global_decay" not in modern.names
    assert (modern.get("lr").low, modern.get("lr").high) == pytest.approx((1e-4, 1e-2))
    assert [p["lr"] for p in baselines(paper, run_options(model="lstm_mel"))] == [0.01, 0.01]
    assert [p["lr"] for p in baselines(modern, modern_options)] == [1e-3, 1e-3]  # the recipe's rate
