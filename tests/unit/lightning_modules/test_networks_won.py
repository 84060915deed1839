"""Won et al.'s four models: short_chunk_cnn, short_chunk_resnet, harmonic_cnn, tagging_transformer.

Per model: the parameter count against a closed form derived by hand from the authors' layer
table, forward and backward at the publication's input size, `--summary`, a learning run on the
generated data, and `--evaluate` / `--tag` of that run. The harmonic filter bank gets its own
checks (harmonic stacking, fp32 under autocast), the transformer its positional limit.

Published parameter counts: Won et al. 2020 (SMC) list the models' sizes in their results table,
but the text of that table could not be retrieved while writing these tests (the search corpora
hold the abstract only), so no published figure is asserted; the closed forms below follow the
layer tables in the authors' code (minzwon/sota-music-tagging-models `training/model.py` and
`training/modules.py`; minzwon/semi-supervised-music-tagging-transformer `src/models.py` and
`src/modules.py`), counted the PyTorch way (trainable parameters; BatchNorm contributes 2 per
channel).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import soundfile as sf
import torch
from torch import nn

import run
from experiments.options import RunOptions
from experiments.resolve import mel_settings, network_overrides
from infrastructure.errors import ConfigError
from lightning_modules.networks.harmonic_cnn import HarmonicCNN, HarmonicFilterbank, base_frequencies
from lightning_modules.networks.short_chunk import ShortChunkCNN
from lightning_modules.networks.summary import layer_summary, torch_parameter_count
from lightning_modules.networks.tagging_transformer import TaggingTransformer
from lightning_modules.registry import MODELS, build_network, input_shape, network_config, segment_layout
from tests.support.helpers import read_metrics, tiny_data_args

MODELS_B = ("short_chunk_cnn", "short_chunk_resnet", "harmonic_cnn", "tagging_transformer")
N_TAGS = 50


# ---------------------------------------------------------------- closed-form parameter counts


def conv3(i: int, o: int) -> int:
    """Conv2d 3x3 with bias + BatchNorm2d (gamma, beta)."""
    return 9 * i * o + o + 2 * o


def head(d: int, tags: int) -> int:
    """Won et al.'s dense d + BatchNorm1d + dense to the tags."""
    return (d * d + d) + 2 * d + (d * tags + tags)


def short_chunk_cnn_count(w: int = 128, tags: int = N_TAGS) -> int:
    widths = [1] + [w * m for m in (1, 1, 2, 2, 2, 2, 4)]
    return 2 + sum(conv3(i, o) for i, o in zip(widths, widths[1:])) + head(4 * w, tags)


def short_chunk_resnet_count(w: int = 128, tags: int = N_TAGS) -> int:
    # every block strides by 2, so every block has the 3x3 projection shortcut
    widths = [1] + [w * m for m in (1, 1, 2, 2, 2, 2, 4)]
    blocks = sum(conv3(i, o) + conv3(o, o) + conv3(i, o) for i, o in zip(widths, widths[1:]))
    return 2 + blocks + head(4 * w, tags)


def harmonic_cnn_count(w: int = 128, tags: int = N_TAGS, harmonics: int = 6) -> int:
    res = lambda c: 2 * conv3(c, c)  # noqa: E731  identity shortcut
    return (1 + 2 * harmonics + conv3(harmonics, w) + 3 * res(w) + conv3(w, 2 * w) + 2 * res(2 * w)
            + head(2 * w, tags))


def tagging_transformer_count(w: int = 128, d: int = 256, layers: int = 4, positions: int = 512,
                              n_mels: int = 128, tags: int = N_TAGS) -> int:
    frontend = 2 + (2 * conv3(1, w) + conv3(w, w)) + 2 * (2 * conv3(w, w)) + (w * (n_mels // 8) * d + d)
    embedding = d + (positions + 1) * d
    layer = 2 * d + 3 * d * d + (d * d + d) + 2 * d + (d * 4 * d + 4 * d) + (4 * d * d + d)
    return frontend + embedding + layers * layer + 2 * d + d * tags + tags


def build(name: str, **options) -> nn.Module:
    spec = MODELS[name]
    options = RunOptions(model=name, **options)
    frontend = mel_settings(spec, options)
    layout = segment_layout(spec, 465_984, frontend)
    return build_network(network_config(spec, input_shape(frontend, layout), N_TAGS, **network_overrides(options)))


@pytest.mark.parametrize("name, expected", [
    ("short_chunk_cnn", short_chunk_cnn_count()),
    ("short_chunk_resnet", short_chunk_resnet_count()),
    ("harmonic_cnn", harmonic_cnn_count()),
    ("tagging_transformer", tagging_transformer_count()),
])
def test_parameter_count_matches_the_layer_table(name, expected):
    with torch.device("meta"):
        net = build(name)
    assert torch_parameter_count(net) == expected
    # the summary's rows hold every parameter once (layer_summary raises otherwise) and add up
    # (checked on the real device: meta tensors cannot run the forward pass)


def test_counts_at_the_published_settings():
    """The numbers docs/models.md quotes (128-wide networks, 50 tags), from the closed forms above."""
    assert short_chunk_cnn_count() == 3_687_348
    assert short_chunk_resnet_count() == 12_104_244
    assert harmonic_cnn_count() == 3_631_551
    assert tagging_transformer_count() == 4_567_732


def test_registry_defaults_follow_the_publications():
    cnn, res, hcnn, tr = (MODELS[m] for m in MODELS_B)
    for spec in (cnn, res):
        assert (spec.frontend.n_fft, spec.frontend.hop_length, spec.frontend.n_mels) == (512, 256, 128)
        assert (spec.frame_samples, spec.segments_per_clip, spec.train_crop, spec.batch_size) == (59_049, 16, "random", 16)
    assert hcnn.frontend is None and (hcnn.frame_samples, hcnn.segments_per_clip, hcnn.batch_size) == (80_000, 16, 16)
    assert (tr.frontend.n_fft, tr.frontend.hop_length, tr.frontend.n_mels) == (1024, 512, 128)
    assert (tr.frame_samples, tr.segments_per_clip, tr.batch_size) == (160_000, 8, 32)
    layout = segment_layout(cnn, 465_984, cnn.frontend)
    assert (layout.segment_samples, layout.segments_per_clip) == (59_049, 16)
    # the paper's models keep their layouts (sample_cnn_frames: as many frames as cover the clip)
    frames = MODELS["sample_cnn_frames"]
    assert segment_layout(frames, 465_984, None).segments_per_clip == math.ceil(465_984 / 59_049)


# ---------------------------------------------------------------- forward and backward


@pytest.mark.parametrize("name", MODELS_B)
def test_forward_backward_at_the_publication_input_size(name):
    torch.manual_seed(0)
    net = build(name)
    net.train()
    shape = {"short_chunk_cnn": (128, 231), "short_chunk_resnet": (128, 231), "harmonic_cnn": (80_000,),
             "tagging_transformer": (128, 313)}[name]
    assert net.input_shape == shape
    x = torch.randn(2, *shape) * (0.1 if name == "harmonic_cnn" else 10.0)
    logits = net(x)
    assert logits.shape == (2, N_TAGS) and torch.isfinite(logits).all()
    nn.functional.binary_cross_entropy_with_logits(logits, torch.ones_like(logits)).backward()
    for pname, param in net.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), pname
    rows = layer_summary(net)
    assert sum(r.torch_params for r in rows) == torch_parameter_count(net)
    assert rows[-1].output_shape == (N_TAGS,)


def test_short_chunk_shapes_and_size_limits():
    cnn = ShortChunkCNN(128, 231, N_TAGS)
    assert cnn.feature_sizes[-1] == (1, 1)
    res = ShortChunkCNN(128, 231, N_TAGS, residual=True)
    assert res.feature_sizes[-1] == (1, 2)  # ceil-halving: 231 -> 116 -> ... -> 2
    with pytest.raises(ConfigError, match="at least 128"):
        ShortChunkCNN(64, 231, N_TAGS)
    ShortChunkCNN(64, 116, N_TAGS, residual=True)  # the strided ResNet takes any size
    with pytest.raises(ConfigError, match="channels"):
        ShortChunkCNN(128, 231, N_TAGS, channels=0)


# ---------------------------------------------------------------- the harmonic filter bank


def test_harmonic_centres_follow_the_authors_layout():
    base = base_frequencies(16_000, 6, 2)
    # C1 (MIDI 24) up to E6 (MIDI 88, the note nearest 16000 / 12 Hz) in half-semitone steps
    assert len(base) == 128
    assert base[0] == pytest.approx(32.7032, rel=1e-4)
    assert base[-1] == pytest.approx(440.0 * 2 ** ((87.5 - 69) / 12), rel=1e-9)
    bank = HarmonicFilterbank()
    assert bank.centres.shape == (6 * 128,) and bank.centres.max() < 8_000
    assert bank.centres[5 * 128] == pytest.approx(6 * base[0], rel=1e-6)


def test_harmonic_channels_stack_the_partials():
    """A 1 kHz tone: channel h (harmonic h + 1) peaks at the band whose base is 1000 / (h + 1) Hz."""
    sr = 16_000
    t = np.arange(80_000) / sr
    tone = torch.tensor(0.5 * np.sin(2 * np.pi * 1000.0 * t), dtype=torch.float32)[None]
    bank = HarmonicFilterbank()
    out = bank(tone)
    assert out.shape == (1, 6, 128, 80_000 // 256 + 1)
    base = np.array(base_frequencies(sr, 6, 2))
    energy = out[0, :, :, 10:-10].mean(dim=-1)  # (harmonic, band), away from the padded edges
    for h in range(6):
        peak = int(energy[h].argmax())
        assert abs(12 * np.log2(base[peak] * (h + 1) / 1000.0)) <= 0.5, (h, base[peak])


def test_harmonic_frontend_is_fp32_under_autocast_and_learns_its_bandwidth():
    torch.manual_seed(0)
    loud = torch.randn(2, 80_000).clamp(-1, 1) * 32767.0  # int16 full scale: its power spectrum overflows fp16
    bank = HarmonicFilterbank()
    plain = bank(loud)
    with torch.autocast("cpu", dtype=torch.float16):
        mixed = bank(loud.half())
    assert mixed.dtype == torch.float32 and torch.isfinite(mixed).all()
    assert torch.allclose(mixed, bank(loud.half().float()), atol=1e-3)
    assert torch.isfinite(plain).all()
    net = HarmonicCNN(80_000, N_TAGS, channels=8)
    net(torch.randn(2, 80_000) * 0.1).sum().backward()
    assert net.frontend.bandwidth_q.grad is not None and net.frontend.bandwidth_q.grad.abs() > 0
    assert "frontend.bandwidth_q" in net.state_dict() and "frontend.centres" not in net.state_dict()


def test_harmonic_cnn_refuses_too_short_chunks():
    with pytest.raises(ConfigError, match="at least 288 frames"):
        HarmonicCNN(60_000, N_TAGS)


# ---------------------------------------------------------------- the transformer's positions


def test_transformer_refuses_more_frames_than_positions():
    TaggingTransformer(128, 4 * 512 + 3, N_TAGS, channels=4)  # 512 tokens: the table's capacity
    with pytest.raises(ConfigError, match="513 tokens, more than its 512 positions"):
        TaggingTransformer(128, 4 * 513, N_TAGS, channels=4)


def test_transformer_position_error_comes_before_any_data(tmp_path, capsys):
    """hop 64 turns a 10 s chunk into 2,501 frames (625 tokens): refused before the data are generated."""
    cache = tmp_path / "cache"
    code = run.main(["--model", "tagging_transformer", *tiny_data_args(cache), "--hop-length", "64",
                     "--run-dir", str(tmp_path / "run"), "--logger", "none"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "625 tokens, more than its 512 positions" in err[0]
    assert not cache.exists() or not any(cache.iterdir())


# ---------------------------------------------------------------- --summary and --width


@pytest.mark.parametrize("name", MODELS_B)
def test_summary_through_run_py(name, capsys):
    assert run.main(["--model", name, "--summary"]) == 0
    out = capsys.readouterr().out
    expected = {"short_chunk_cnn": short_chunk_cnn_count(), "short_chunk_resnet": short_chunk_resnet_count(),
                "harmonic_cnn": harmonic_cnn_count(), "tagging_transformer": tagging_transformer_count()}[name]
    total = next(line for line in out.splitlines() if line.startswith("Total params"))
    assert f"{expected:,}" in total
    assert ("16 segment(s)" if name != "tagging_transformer" else "8 segment(s)") in out


def test_width_option_sets_the_base_width_and_is_refused_elsewhere(capsys):
    assert run.main(["--model", "short_chunk_cnn", "--summary", "--width", "16"]) == 0
    assert f"{short_chunk_cnn_count(16):,}" in capsys.readouterr().out
    assert run.main(["--model", "mel_cnn", "--summary", "--width", "16"]) == 2
    assert "--width applies to models with a base channel width" in capsys.readouterr().err


# ---------------------------------------------------------------- training, evaluation, tagging

# Learning runs: Adam 1e-3 on the generated data at a reduced base width (--width 16: the 128-wide
# networks cost 1-6 GFLOP per chunk, far beyond a CI budget on 2 cores), one chunk per clip.
# Bar: macro test ROC-AUC >= 0.6. Chance is 0.5; with ~45 test clips and ~30 tags the macro AUC of
# an untrained model spreads about 0.02-0.03 around 0.5 (per-tag AUC std ~0.1-0.15 over ~30 tags),
# so 0.6 is more than three standard deviations above chance.
LEARNING_BAR = 0.6
SHORT_CLIPS, LONG_CLIPS = 59_049, 160_000  # 3.7 s for the short-chunk models; 10 s fits 5 s and 10 s chunks
# The ResNet and the Harmonic CNN learn more slowly per step (measured on this data: 0.51 and 0.54 test ROC-AUC
# after 6 epochs at batch 16), so they take batch 8, twice the steps for the same compute. At Adam 1e-3 the Harmonic
# CNN then sits on the bar (it passed on the CI machine and scored 0.573 on this 2-core one: rounding moves it);
# at 3e-3 it reached 0.706 here.
RUN_ARGS = {
    "short_chunk_cnn": (SHORT_CLIPS, ["--width", "16"], 6),
    "short_chunk_resnet": (SHORT_CLIPS, ["--width", "16", "--batch-size", "8"], 6),
    "harmonic_cnn": (LONG_CLIPS, ["--width", "16", "--batch-size", "8", "--lr", "0.003"], 8),
    # its validation ROC-AUC peaks at epoch 2 (0.745) and falls after: 3 epochs
    "tagging_transformer": (LONG_CLIPS, ["--width", "16", "--n-mels", "64", "--hop-length", "1024"], 3),
}


@pytest.fixture(scope="module")
def trained(request, cache_dir, tmp_path_factory):
    """One learning run per model, shared by the learning and the evaluate/tag tests."""
    runs = {}

    def train(name: str):
        if name not in runs:
            clip_samples, extra, epochs = RUN_ARGS[name]
            run_dir = tmp_path_factory.mktemp(name) / "run"
            code = run.main(["--model", name, *tiny_data_args(cache_dir, clip_samples=clip_samples),
                             "--segments-per-clip", "1", "--max-epochs", str(epochs), "--recipe", "paper",
                             "--optimizer", "adam", "--lr", "0.001", *extra,  # extra may override the rate
                             "--run-dir", str(run_dir), "--logger", "csv"])
            assert code == 0
            runs[name] = run_dir
        return runs[name]

    return train


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS_B)
def test_model_learns_on_generated_data(name, trained):
    metrics = read_metrics(trained(name))
    print(f"{name}: test ROC-AUC {metrics['roc_auc']:.3f}")
    assert metrics["roc_auc"] >= LEARNING_BAR, metrics["test"]
    config = json.loads((trained(name) / "config.json").read_text())
    assert config["resolved"]["network"]["kwargs"]["channels"] == 16
    assert config["resolved"]["layout"]["segment_samples"] == MODELS[name].frame_samples


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS_B)
def test_run_evaluates_and_tags(name, trained, tmp_path, capsys):
    run_dir = trained(name)
    metrics = read_metrics(run_dir)
    capsys.readouterr()
    assert run.main(["--evaluate", str(run_dir), "--run-dir", str(tmp_path / "eval"), "--no-progress"]) == 0
    evaluated = read_metrics(tmp_path / "eval")
    assert evaluated["test"]["roc_auc"] == pytest.approx(metrics["test"]["roc_auc"], abs=1e-6)
    assert evaluated["test"]["pr_auc"] == pytest.approx(metrics["test"]["pr_auc"], abs=1e-6)
    song = tmp_path / "song.wav"
    rng = np.random.default_rng(0)
    t = np.arange(12 * 22_050) / 22_050  # 12 s at 22.05 kHz, stereo: resampled and down-mixed by the tagger
    mono = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(t.size)
    sf.write(song, np.stack([mono, mono], axis=1), 22_050)
    capsys.readouterr()
    assert run.main(["--tag", str(song), "--checkpoint", str(run_dir), "--json", "--no-progress"]) == 0
    report = json.loads(capsys.readouterr().out)
    text = json.dumps(report)
    tags = (run_dir / "tags.txt").read_text().split()
    assert "song.wav" in text and any(tag in text for tag in tags)


# ---------------------------------------------------------------- sweeps


@pytest.mark.parametrize("name", MODELS_B)
def test_search_space_fits_mtat_clips_and_names_what_does_not_fit(name):
    from sweeps.spaces import baselines, build_space

    options = run.parse_options(["--model", name])
    space = build_space(name, options, 465_984)
    assert not space.notes and "lr" in space.names and "dropout" in space.names
    assert len(baselines(space, options)) == 1  # the publication's settings are the first trial
    if MODELS[name].frame_samples > SHORT_CLIPS:
        with pytest.raises(ConfigError, match=f"segments of {MODELS[name].frame_samples} samples do not fit"):
            build_space(name, options, SHORT_CLIPS)
    else:  # the short-chunk models' whole space fits the generated 3.7 s clips
        assert not build_space(name, options, SHORT_CLIPS).notes


@pytest.mark.slow
def test_one_trial_sweep_of_a_won_model(cache_dir, tmp_path, capsys):
    code = run.main(["--sweep", "short_chunk_resnet", *tiny_data_args(cache_dir, clip_samples=SHORT_CLIPS),
                     "--width", "8", "--segments-per-clip", "1", "--trials", "1", "--max-epochs", "1",
                     "--limit-train-batches", "2", "--pruner", "none", "--study-name", "won",
                     "--runs-root", str(tmp_path), "--logger", "none"])
    assert code == 0
    report = json.loads((tmp_path / "sweeps" / "won" / "best_params.json").read_text())
    assert report["counts"]["COMPLETE"] == 1
    assert report["best"]["params"]["n_mels"] == 128 and report["best"]["params"]["hop_length"] == 256
