"""`run.py --tag`: decoding any common file, cutting it as evaluation does, reporting, and surviving broken files.

The model is the paper's LSTM (4 segments per clip) trained for one epoch on the tiny synthetic
dataset; what matters here is that tagging reproduces evaluation, not that the tags are good.
The taggram's two-instrument test needs a model that has learned something: the same LSTM
trained for six epochs with Adam and input normalisation (tests/integration/test_training.py's recipe; test
ROC-AUC about 0.69, ~90 s on a loaded 2-core machine), on the same data.
"""

import json

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

import run
from datamodules.datamodule import MTATDataModule
from datamodules.datasets.mtat.annotations import read_annotations
from datamodules.datasets.mtat.reader import find_audio_root
from datamodules.datasets.synthesis.plan import ClipPlan
from datamodules.datasets.synthesis.render import render_clip
from datamodules.frontend import MelConfig
from datamodules.segments import SegmentLayout
from infrastructure.audio import MTAT_CLIP_SAMPLES, SAMPLE_RATE
from infrastructure.errors import ConfigError
from lightning_modules.registry import MODELS, build_network, input_shape, network_config, segment_layout
from lightning_modules.tagging_module import TaggingModule
from tagging.tagger import AudioError, Tagger, cut_segments, load_audio, segment_starts
from tagging.taggram import (
    TAGGRAM_ROWS,
    Taggram,
    check_hop,
    padded_fractions,
    taggram_plot,
    window_starts,
    write_taggram_png,
)
from tests.support.helpers import TINY_CLIP_SAMPLES, TRAINED_LSTM_ARGS, tiny_data_args

# hop 256 and 4 segments: (59,049 // 256 + 1) // 4 = 57 frames, i.e. 14,336-sample segments
LSTM_ARGS = TRAINED_LSTM_ARGS  # the shared run's settings

CLIPS = 120


@pytest.fixture(scope="session")
def tagger(lstm_mel_run):
    checkpoint = json.loads((lstm_mel_run / "metrics.json").read_text())["best_checkpoint"]
    return Tagger.from_checkpoint(checkpoint)


@pytest.fixture(scope="session")
def learned_run(cache_dir, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("tagger-learned") / "run"
    code = run.main(["--model", "lstm_mel", *tiny_data_args(cache_dir, clips=CLIPS), *LSTM_ARGS,
                     "--optimizer", "adam", "--lr", "0.001", "--input-norm",
                     "--max-epochs", "6", "--run-dir", str(run_dir), "--logger", "none"])
    assert code == 0
    return run_dir


def tone(seconds, rate, freqs=(440.0,), amplitude=0.3):
    t = np.arange(int(seconds * rate)) / rate
    return np.stack([amplitude * np.sin(2 * np.pi * f * t) for f in freqs], axis=1).astype(np.float32)


def peak_hz(x, rate=SAMPLE_RATE):
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return np.fft.rfftfreq(len(x), 1 / rate)[np.argmax(spectrum)]


# ------------------------------------------------------------------------------------------
# Segments
# ------------------------------------------------------------------------------------------
def test_segments_cover_short_exact_and_long_inputs():
    assert segment_starts(100, 1000).tolist() == [0]
    segments, starts = cut_segments(np.ones(100, np.float32), 1000)
    assert segments.shape == (1, 1000) and segments[0, :100].all() and not segments[0, 100:].any()
    # a training-length clip is cut exactly as evaluation cuts it (4 segments, 4 x 14,336 < 59,049)
    layout = SegmentLayout.for_mel_frames(TINY_CLIP_SAMPLES, 256, 4)
    starts = segment_starts(TINY_CLIP_SAMPLES, layout.segment_samples)
    assert starts.tolist() == layout.starts(TINY_CLIP_SAMPLES).tolist()
    # a whole-clip SampleCNN segment: one centred segment for the clip, consecutive ones over a song
    assert segment_starts(MTAT_CLIP_SAMPLES, MTAT_CLIP_SAMPLES).tolist() == [0]
    long = segment_starts(10 * MTAT_CLIP_SAMPLES + 1000, MTAT_CLIP_SAMPLES)
    assert len(long) == 10 and long[0] == 0 and long[-1] + MTAT_CLIP_SAMPLES == 10 * MTAT_CLIP_SAMPLES + 1000
    assert np.all(np.diff(long) >= MTAT_CLIP_SAMPLES)  # no overlap here, gaps of at most a few samples
    wave = np.arange(5000, dtype=np.float32)
    segments, starts = cut_segments(wave, 1200)
    assert len(starts) == 4 and all((seg == wave[s:s + 1200]).all() for seg, s in zip(segments, starts))


# ------------------------------------------------------------------------------------------
# Decoding
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["WAV", "FLAC", "OGG", "MP3"])
@pytest.mark.parametrize("rate", [8000, 22050, 44100])
def test_any_format_and_rate_becomes_16k_mono(tmp_path, fmt, rate):
    path = tmp_path / f"tone.{fmt.lower()}"
    sf.write(path, tone(1.5, rate, freqs=(440.0, 1000.0)), rate, format=fmt)  # stereo: 440 Hz left, 1 kHz right
    audio = load_audio(path)
    assert audio.sample_rate == SAMPLE_RATE and audio.source_rate == rate and audio.channels == 2
    assert abs(len(audio.waveform) - 24_000) <= 2 and audio.waveform.dtype == np.float32
    spectrum = np.abs(np.fft.rfft(audio.waveform))
    freqs = np.fft.rfftfreq(len(audio.waveform), 1 / SAMPLE_RATE)
    top_two = sorted(freqs[np.argsort(spectrum)[-2:]])
    assert top_two == pytest.approx([440, 1000], abs=2)  # both channels, at their pitch
    assert 0.1 < np.abs(audio.waveform).max() < 0.35  # mixed down by averaging, not summing


def test_start_and_duration_select_an_excerpt(tmp_path):
    first, second = tone(1.0, 22050, (440.0,))[:, 0], tone(1.5, 22050, (1500.0,))[:, 0]
    path = tmp_path / "two.flac"
    sf.write(path, np.concatenate([first, second]), 22050)
    audio = load_audio(path, start_s=1.2, duration_s=0.5)
    assert len(audio.waveform) == 8000 and audio.start_s == pytest.approx(1.2)
    assert peak_hz(audio.waveform) == pytest.approx(1500, abs=5)
    assert len(load_audio(path, start_s=2.0).waveform) == 8000  # to the end
    with pytest.raises(AudioError, match="past the end"):
        load_audio(path, start_s=3.0)


def _broken_files(folder):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "empty.wav").write_bytes(b"")
    (folder / "garbage.mp3").write_bytes(np.random.default_rng(0).bytes(4000))
    (folder / "notes.wav").write_text("not audio at all\n" * 50)
    for fmt in ("WAV", "FLAC", "MP3", "OGG"):
        good = folder / f"good.{fmt.lower()}"
        sf.write(good, tone(4.0, 22050, (440.0, 660.0)), 22050, format=fmt)
        data = good.read_bytes()
        (folder / f"truncated.{fmt.lower()}").write_bytes(data[: len(data) // 2])
        good.unlink()


def test_broken_files_raise_audio_errors_with_reasons(tmp_path):
    _broken_files(tmp_path)
    reasons = {}
    for path in sorted(tmp_path.iterdir()):
        with pytest.raises(AudioError) as error:
            load_audio(path)
        reasons[path.name] = str(error.value)
    assert "empty file" in reasons["empty.wav"]
    assert "not a readable audio file" in reasons["garbage.mp3"] and "not a readable" in reasons["notes.wav"]
    assert "truncated" in reasons["truncated.wav"] and "truncated" in reasons["truncated.mp3"]
    assert "decoded" in reasons["truncated.mp3"]  # fewer samples than the file declares
    assert reasons["truncated.flac"] and "no audio samples" in reasons["truncated.ogg"]


# ------------------------------------------------------------------------------------------
# Tagging
# ------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_tagging_a_dataset_clip_reproduces_evaluation(tagger, cache_dir, lstm_mel_run):
    hp = tagger.config
    datamodule = MTATDataModule("synthetic", str(cache_dir), layout=dict(hp["layout"]), frontend=dict(hp["frontend"]),
                                batch_size=4, num_workers=0, progress=False,
                                synthetic={"n_clips": CLIPS, "clip_samples": TINY_CLIP_SAMPLES, "seed": 0})
    datamodule.setup()
    test = datamodule.dataset("test")
    annotations = read_annotations(datamodule.data_dir / "annotations_final.csv")
    for position in (0, 3):
        n = datamodule.layout.segments_per_clip
        batch = torch.utils.data.default_collate([test[position * n + k] for k in range(n)])
        batch = datamodule.on_after_batch_transfer(batch, 0)
        with torch.inference_mode():
            expected = torch.sigmoid(tagger.network(batch["input"])).mean(0).double().numpy()
        row = int(test.rows[position])
        result = tagger.tag(find_audio_root(datamodule.data_dir) / annotations.mp3_paths[row])
        assert len(result.segment_starts_s) == n
        # same decoder; the cache stores int16, the tagger float32: a quantisation step apart at most
        np.testing.assert_allclose(result.probs, expected, atol=2e-3)
        assert [t.tag for t in result.tags] == [tagger.tags[i] for i in np.argsort(-result.probs, kind="stable")
                                              if result.probs[i] >= tagger.thresholds[i]]


@pytest.mark.slow
def test_tag_command_on_a_folder_of_good_and_broken_files(lstm_mel_run, tmp_path, capsys):
    music = tmp_path / "music"
    (music / "album").mkdir(parents=True)
    sf.write(music / "short.wav", tone(0.3, 8000), 8000)  # shorter than one segment (0.9 s)
    sf.write(music / "album" / "long.mp3", tone(10.0, 44100, (220.0, 330.0)), 44100, format="MP3")
    sf.write(music / "album" / "mono.ogg", tone(3.0, 22050), 22050, format="OGG")
    sf.write(music / "album" / "song.flac", tone(5.0, SAMPLE_RATE, (440.0, 550.0)), SAMPLE_RATE)
    (music / "cover.jpg").write_bytes(b"\xff\xd8 not tagged")
    _broken_files(music / "broken")
    taggrams = tmp_path / "taggrams"
    code = run.main(["--tag", str(music), str(tmp_path / "missing.mp3"), "--checkpoint", str(lstm_mel_run),
                     "--json", "--top-k", "3", "--taggram", str(taggrams), "--no-progress"])
    captured = capsys.readouterr()
    assert code == 1  # some inputs failed, the rest were tagged
    report = json.loads(captured.out)
    by_name = {entry["path"].rsplit("/", 1)[-1]: entry for entry in report["files"]}
    assert set(by_name) == {"short.wav", "long.mp3", "mono.ogg", "song.flac"}
    failed = {entry["path"].rsplit("/", 1)[-1] for entry in report["failed"]}
    assert failed == {"missing.mp3", "empty.wav", "garbage.mp3", "notes.wav", "truncated.wav", "truncated.flac",
                      "truncated.mp3", "truncated.ogg"}
    assert all(entry["error"] for entry in report["failed"])
    assert [p.rsplit("/", 1)[-1] for p in report["ignored"]] == ["cover.jpg"]
    # lengths and segment counts: 14,336-sample segments, a short file padded to one
    assert by_name["short.wav"]["segments"] == 1 and by_name["short.wav"]["duration_s"] == pytest.approx(0.3)
    assert by_name["long.mp3"]["segments"] == round(160_000 / 14_336) and by_name["long.mp3"]["channels"] == 2
    assert by_name["long.mp3"]["source_sample_rate"] == 44100
    thresholds = dict(zip(report["tags"], report["thresholds"]))
    for entry in report["files"]:
        scores = entry["scores"]
        assert [t["tag"] for t in entry["top"]] == sorted(scores, key=lambda t: -scores[t])[:3]
        assert {t["tag"] for t in entry["tags"]} == {t for t in scores if scores[t] >= thresholds[t] - 1e-6}
        with Image.open(entry["taggram"]) as image:
            assert image.format == "PNG"
    assert len(list(taggrams.glob("*.png"))) == 4
    assert "8 of 12 input(s) failed" in captured.err


@pytest.mark.slow
def test_tag_command_text_output_excerpt_and_usage_errors(lstm_mel_run, tmp_path, capsys):
    song = tmp_path / "song.wav"
    sf.write(song, tone(6.0, 44100), 44100)
    code = run.main(["--tag", str(song), "--checkpoint", str(lstm_mel_run), "--start", "1", "--duration", "2",
                     "--taggram", str(tmp_path / "one.png")])
    out = capsys.readouterr().out
    assert code == 0
    assert f"{song}  (2.0 s from 1 s, 44100 Hz mono, 2 segments)" in out
    assert "  tags:  " in out and "  top 5: " in out and (tmp_path / "one.png").is_file()
    assert run.main(["--tag", str(song)]) == 2  # no checkpoint
    assert run.main(["--tag", str(song), "--checkpoint", str(tmp_path / "nothing.ckpt")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------
# Taggram: the model's input window slid over the song
# ------------------------------------------------------------------------------------------
MTAT_LIKE_TAGS = ["guitar", "classical", "slow", "techno", "strings", "drums", "electronic", "rock", "fast",
                  "piano", "ambient", "beat", "violin", "vocal", "synth", "female", "indian", "opera", "male",
                  "singing", "vocals", "no vocals", "harpsichord", "loud", "quiet", "flute", "woman",
                  "male vocal", "no vocal", "pop", "soft", "sitar", "solo", "man", "classic", "choir", "voice",
                  "new age", "dance", "male voice", "female vocal", "beats", "harp", "cello", "no voice", "weird",
                  "country", "metal", "female voice", "choral"]


def test_taggram_windows_are_centred_on_every_hop_and_bad_hops_are_refused():
    # a window centred on every hop, as a centred STFT frames a signal: n // hop + 1 of them, padded past the ends
    assert window_starts(100, 1000, 50).tolist() == [-500, -450, -400]
    assert window_starts(1000, 1000, 50).tolist() == list(range(-500, 501, 50))
    for n, w, h in ((192_000, 14_336, 8_000), (2_880_000, 465_984, 48_000), (465_984, 59_049, 48_000)):
        starts = window_starts(n, w, h)
        assert len(starts) == n // h + 1 and np.all(np.diff(starts) == h) and starts[0] == -(w // 2)
        padded = padded_fractions(n, w, starts)
        assert padded[0] == pytest.approx((w // 2) / w) and np.all((padded >= 0) & (padded < 1))
    assert padded_fractions(1000, 100, np.array([450])).tolist() == [0.0]
    assert padded_fractions(1000, 100, np.array([950])).tolist() == [0.5]
    assert check_hop(3.0, 16_000) == 48_000 and check_hop(0.5, 16_000) == 8_000
    for bad in (0, -1.0, float("nan"), float("inf"), 1e-6, "soon"):
        with pytest.raises(ConfigError, match="--taggram-hop"):
            check_hop(bad, 16_000)


def _random_taggram(windows=30, hop=3.0, window=3.69, start=10.0, seed=0):
    rng = np.random.default_rng(seed)
    starts = start + hop * np.arange(windows)
    return Taggram(starts_s=starts, centres_s=starts + window / 2, probs=rng.random((windows, len(MTAT_LIKE_TAGS))),
                   window_s=window, hop_s=hop, padded=np.zeros(windows),
                   excerpt=(start, start + hop * (windows - 1) + window))


@pytest.mark.parametrize("name", ["x" * 196 + ".mp3", "a long song name " * 12 + ".flac", "song.mp3"])
def test_taggram_image_keeps_everything_inside_and_shows_the_strongest_tags(tmp_path, name):
    taggram = _random_taggram()
    file_probs = np.random.default_rng(1).random(len(MTAT_LIKE_TAGS))
    thresholds = np.full(len(MTAT_LIKE_TAGS), 0.8)
    figure = taggram_plot(taggram, MTAT_LIKE_TAGS, file_probs, thresholds, name)
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    canvas = figure.bbox  # pixels
    tight = figure.get_tightbbox(renderer)  # inches: every visible artist that takes part in the layout
    assert tight.x0 >= -1e-6 and tight.y0 >= -1e-6
    assert tight.x1 <= figure.get_figwidth() + 1e-6 and tight.y1 <= figure.get_figheight() + 1e-6
    axes, colorbar = figure.axes
    labels = axes.get_yticklabels()
    for artist in [*figure.texts, axes.xaxis.label, colorbar.yaxis.label, *labels, *colorbar.get_yticklabels()]:
        box = artist.get_window_extent(renderer)
        assert canvas.x0 - 0.5 <= box.x0 and box.x1 <= canvas.x1 + 0.5 and canvas.y0 - 0.5 <= box.y0
        assert box.y1 <= canvas.y1 + 0.5, artist.get_text()[:40]
    assert "".join(name.split()) in "".join(figure.get_suptitle().split())  # wrapped, not cut
    # rows: the file's 20 strongest tags (by the printed chunk average), strongest on top, bold above threshold
    order = np.argsort(-file_probs, kind="stable")[:TAGGRAM_ROWS]
    assert [t.get_text() for t in labels] == [MTAT_LIKE_TAGS[i] for i in order]
    assert [t.get_fontweight() == "bold" for t in labels] == [file_probs[i] >= 0.8 for i in order]
    mesh = axes.collections[0].get_array()
    assert mesh.shape == (TAGGRAM_ROWS, taggram.windows)  # one column per window
    np.testing.assert_allclose(mesh[:, 7], taggram.probs[7, order])
    assert axes.get_xlim() == pytest.approx(taggram.excerpt)  # x is song time
    path = write_taggram_png(taggram, MTAT_LIKE_TAGS, file_probs, thresholds, name,
                             tmp_path / "t.png")
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size[0] >= 700


def _plan(genre, parts, tags, **content):
    values = dict(tempo_class="medium", tempo=100.0, level="normal", drums=None, voice=None, reverb=0.0, key=50,
                  mode="major")
    values.update(content)
    return ClipPlan(genre=genre, parts=parts, tags=tags, **values)


HARPSICHORD = _plan("classical", ("harpsichord",), ("classical", "harpsichord"), reverb=0.3)
TECHNO = _plan("techno", ("synth", "synth_bass"), ("techno", "beat"), drums="four", tempo=150.0, tempo_class="fast",
               mode="minor")


def centred_windows(audio: np.ndarray, w: int, starts) -> np.ndarray:
    """The taggram's windows: the audio each covers first, then zeros (as training pads)."""
    out = np.zeros((len(starts), w), np.float32)
    for row, s in zip(out, starts):
        piece = audio[max(s, 0):s + w]
        row[:len(piece)] = piece
    return out


def two_halves(seconds_each: float, rate: int = 16_000) -> np.ndarray:
    """Generated harpsichord (tagged classical) for `seconds_each`, then generated techno for as long."""
    half = int(seconds_each * rate)
    return np.concatenate([render_clip(HARPSICHORD, half, np.random.default_rng(1)),
                           render_clip(TECHNO, half, np.random.default_rng(1))])


def assert_both_tags_change(windows: dict, first, second, rising: str = "techno") -> str:
    """The first half's tag (classical) falls and a tag of the second half's plan (techno, beat) rises."""
    classical, techno = np.array(windows["probs"]["classical"]), np.array(windows["probs"][rising])
    means = (f"classical {classical[first].mean():.3f} -> {classical[second].mean():.3f}, "
             f"techno {techno[first].mean():.3f} -> {techno[second].mean():.3f}")
    assert classical[first].mean() > classical[second].mean() + 0.02, means
    assert techno[second].mean() > techno[first].mean() + 0.02, means
    return means


@pytest.mark.slow
def test_taggram_follows_a_song_whose_instrument_changes_halfway(learned_run, tmp_path, capsys):
    # 6 s of generated harpsichord, then 6 s of generated techno, as a 16 kHz WAV; a chunk model (lstm_mel)
    rate = 16_000
    song = two_halves(6.0)
    path = tmp_path / ("x" * 196 + ".wav")  # a 200-character file name
    sf.write(path, song, rate)
    png = tmp_path / "song.png"
    code = run.main(["--tag", str(path), "--checkpoint", str(learned_run), "--json", "--taggram", str(png),
                     "--taggram-hop", "0.5", "--no-progress"])
    entry = json.loads(capsys.readouterr().out)["files"][0]
    assert code == 0 and entry["taggram"] == str(png)
    windows = entry["taggram_windows"]
    tagger = Tagger.from_checkpoint(learned_run)
    w, h, n = tagger.segment_samples, 8_000, len(song)  # 14,336-sample input, hop 0.5 s
    count = n // h + 1
    assert windows["windows"] == count == 25
    assert windows["window_s"] == pytest.approx(w / rate) and windows["hop_s"] == 0.5
    starts = np.arange(count) * h - w // 2
    np.testing.assert_allclose(windows["starts_s"], starts / rate, atol=1e-6)
    np.testing.assert_allclose(windows["centres_s"], np.arange(count) * 0.5, atol=1e-6)
    np.testing.assert_allclose(windows["padded"], padded_fractions(n, w, starts), atol=1e-6)
    assert list(windows["probs"]) == tagger.tags and all(len(v) == count for v in windows["probs"].values())
    # the values are the model's on those windows of the decoded file, zero-padded past its ends
    expected = tagger.segment_probabilities(centred_windows(load_audio(path).waveform, w, starts))
    np.testing.assert_allclose(np.array(list(windows["probs"].values())).T, expected, atol=2e-6)
    first, second = starts + w <= 6 * rate, starts >= 6 * rate
    assert first.sum() == 12 and second.sum() == 12
    assert_both_tags_change(windows, first, second)
    with Image.open(png) as image:
        assert image.format == "PNG"
    # the printed tag list is the chunk average of today, with or without a taggram
    assert run.main(["--tag", str(path), "--checkpoint", str(learned_run), "--json", "--no-progress"]) == 0
    plain = json.loads(capsys.readouterr().out)["files"][0]
    assert "taggram_windows" not in plain
    assert {k: v for k, v in entry.items() if not k.startswith("taggram")} == plain
    chunks, _ = cut_segments(load_audio(path).waveform, w)
    assert plain["segments"] == round(n / w) == len(chunks)
    average = tagger.segment_probabilities(chunks).mean(axis=0)
    assert plain["scores"] == {t: round(float(p), 6) for t, p in zip(tagger.tags, average)}


@pytest.mark.slow
def test_a_whole_clip_model_gets_time_resolution_on_a_clip_no_longer_than_its_input(learned_mel_cnn_run):
    # mel_cnn reads whole clips (3.68 s here, as 29.1 s on MTAT): a 3.7 s clip is one chunk, but the centred
    # windows see its first half behind silence, then its second half before silence
    tagger = Tagger.from_checkpoint(learned_mel_cnn_run)
    song = two_halves(TINY_CLIP_SAMPLES / 2 / 16_000)
    assert len(song) <= tagger.segment_samples + 200
    assert len(tagger.tag(song, 16_000).segment_starts_s) == 1
    gram = tagger.taggram(song, 16_000, hop_s=0.25)
    assert gram.windows == len(song) // 4000 + 1 and np.all(gram.padded > 0)
    centres = gram.centres_s
    windows = gram.to_dict(tagger.tags)
    # measured here: classical 0.443 -> 0.198, beat 0.242 -> 0.430
    assert_both_tags_change(windows, centres < 1.0, centres > len(song) / 16_000 - 1.0, rising="beat")


@pytest.mark.slow
def test_taggram_time_axis_honours_start_and_duration_and_bad_hops_fail(lstm_mel_run, tmp_path, capsys):
    song = tmp_path / "song.flac"
    sf.write(song, tone(12.0, 22050, (220.0, 880.0)), 22050)
    code = run.main(["--tag", str(song), "--checkpoint", str(lstm_mel_run), "--start", "2", "--duration", "8",
                     "--taggram", str(tmp_path / "grams"), "--taggram-hop", "1", "--json", "--no-progress"])
    entry = json.loads(capsys.readouterr().out)["files"][0]
    windows = entry["taggram_windows"]
    assert code == 0 and windows["windows"] == 9
    np.testing.assert_allclose(windows["centres_s"], 2 + np.arange(9), atol=1e-6)  # seconds of the song
    np.testing.assert_allclose(windows["starts_s"], 2 + np.arange(9) - 7_168 / 16_000, atol=1e-6)
    assert entry["taggram"].endswith("grams/song.flac.taggram.png")
    # default hop 3 s; the text report says how many windows
    code = run.main(["--tag", str(song), "--checkpoint", str(lstm_mel_run), "--taggram", str(tmp_path / "t.png")])
    assert code == 0 and "(5 windows of 0.9 s centred every 3 s, 2 partly padded)" in capsys.readouterr().out
    short = tmp_path / "short.wav"
    sf.write(short, tone(0.5, 16000), 16000)
    code = run.main(["--tag", str(short), "--checkpoint", str(lstm_mel_run), "--taggram", str(tmp_path / "s.png"),
                     "--json"])
    windows = json.loads(capsys.readouterr().out)["files"][0]["taggram_windows"]
    assert code == 0 and windows["windows"] == 1 and windows["padded"][0] > 0.4 and windows["centres_s"] == [0.0]
    for argv, message in ((["--taggram-hop", "1e-6"], "--taggram-hop 1e-06 s is shorter than one sample"),
                          (["--taggram-hop", "1"], "--taggram-hop goes with --taggram")):
        taggram = [] if "goes with" in message else ["--taggram", str(tmp_path / "bad.png")]
        assert run.main(["--tag", str(song), "--checkpoint", str(lstm_mel_run), *taggram, *argv]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "bad.png").exists()


@pytest.mark.parametrize("name, mel", [("sample_cnn_frames", {}), ("mel_cnn", {"hop_length": 512, "n_mels": 96})])
def test_taggram_windows_of_waveform_and_mel_models(tmp_path, name, mel):
    # untrained networks of the registry (no training: only where the windows fall matters here)
    spec = MODELS[name]
    frontend = MelConfig.from_dict({**spec.frontend.to_dict(), **mel}) if spec.frontend is not None else None
    layout = segment_layout(spec, TINY_CLIP_SAMPLES, frontend)
    config = network_config(spec, input_shape(frontend, layout), 4)
    torch.manual_seed(0)
    module = TaggingModule(build_network(config), config, ["a", "b", "c", "d"], frontend and frontend.to_dict(),
                           layout.to_dict(), 16000)
    tagger = Tagger.from_module(module)
    path = tmp_path / "noise.wav"
    sf.write(path, np.random.default_rng(0).normal(0, 0.1, 20 * 16000).astype(np.float32), 16000)
    plain = tagger.tag(path, start_s=1.0)
    gram = tagger.taggram(path, start_s=1.0, hop_s=3.0)
    w = tagger.segment_samples
    assert w == {"sample_cnn_frames": 59_049, "mel_cnn": 58_880}[name]
    count = 19 * 16000 // 48_000 + 1
    assert gram.windows == count == 7
    np.testing.assert_allclose(gram.centres_s, 1.0 + 3.0 * np.arange(count))
    starts = np.arange(count) * 48_000 - w // 2
    expected = tagger.segment_probabilities(centred_windows(load_audio(path, start_s=1.0).waveform, w, starts))
    np.testing.assert_allclose(gram.probs, expected, atol=1e-6)
    # the tag list does not depend on the taggram
    np.testing.assert_array_equal(tagger.tag(path, start_s=1.0).probs, plain.probs)
