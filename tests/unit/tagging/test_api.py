"""The tagging API on untrained registry networks: waveforms of any shape, files read in pieces, embeddings,
the tolerated shortfall, the catalogue's journal, similarity search, and export + reload for every model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from datamodules.decoding import AudioDecodeError
from datamodules.frontend import MelConfig
from infrastructure.errors import ConfigError, DataError
from lightning_modules.registry import MODELS
from tagging.export import export_model
from tagging.journal import MAGIC, JournalWriter, Record, read_journal
from tagging.reading import plan_file, read_segments, tagging_decoder
from tagging.similar import EmbeddingIndex
from tagging.tagger import Tagger, cut_segments, load_audio
from tests.support.tagging_models import TAGS, small_tagger


@pytest.fixture(scope="module")
def mel_tagger() -> Tagger:
    return small_tagger("mel_cnn")


def noise(seconds: float, rate: int = 16_000, channels: int = 1, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(0, 0.1, (int(seconds * rate), channels)).astype(np.float32)
    return x[:, 0] if channels == 1 else x


def test_a_waveform_of_any_rate_and_layout_tags_as_its_file(mel_tagger, tmp_path):
    stereo = noise(6.0, 44_100, channels=2)
    path = tmp_path / "song.wav"
    sf.write(path, stereo, 44_100, subtype="FLOAT")
    from_file = mel_tagger.tag(path)
    for audio in (stereo, stereo.T, torch.from_numpy(stereo.T.copy())):  # soundfile's and torchaudio's layouts
        result = mel_tagger.tag(audio, sample_rate=44_100)
        np.testing.assert_allclose(result.probs, from_file.probs, atol=1e-6)
        assert result.channels == 2 and result.path is None
    assert from_file.channels == 2 and from_file.source_rate == 44_100
    assert [s.tag for s in from_file.top] == [TAGS[i] for i in np.argsort(-from_file.probs, kind="stable")]
    # an untrained module has chosen no threshold yet: each says it fell back
    assert all(s.score >= s.threshold and s.threshold == pytest.approx(0.4) and s.threshold_fell_back is True
               for s in from_file.tags)
    with pytest.raises(ConfigError, match="sample_rate"):
        mel_tagger.tag(stereo)


def test_a_long_file_read_in_pieces_gives_the_whole_file_segments(mel_tagger, tmp_path):
    path = tmp_path / "long.wav"
    sf.write(path, noise(60.0), 16_000)
    decoder = tagging_decoder(16_000)
    plan = plan_file(decoder, path, mel_tagger.segment_samples, piece_seconds=10.0)
    assert len(plan.pieces) > 3 and plan.pieces[0][0] == 0 and plan.pieces[-1][1] == plan.segments
    pieces = list(read_segments(decoder, plan))
    whole, starts = cut_segments(load_audio(path).waveform, mel_tagger.segment_samples)
    np.testing.assert_array_equal(np.concatenate([s for _, s in pieces]), whole)
    assert list(plan.starts) == starts.tolist()
    # a resampled file: pieces equal a whole decode to float rounding
    path = tmp_path / "long.flac"
    sf.write(path, noise(40.0, 22_050), 22_050)
    plan = plan_file(decoder, path, mel_tagger.segment_samples, piece_seconds=8.0)
    whole, _ = cut_segments(load_audio(path).waveform, mel_tagger.segment_samples)
    np.testing.assert_allclose(np.concatenate([s for _, s in read_segments(decoder, plan)]), whole, atol=1e-5)


def test_embed_gives_the_penultimate_features_per_segment_and_their_mean(mel_tagger, tmp_path):
    x = noise(12.0)
    vectors = mel_tagger.embed(x, 16_000)
    segments, _ = cut_segments(x, mel_tagger.segment_samples)
    with torch.inference_mode():
        expected = mel_tagger.network.embed(mel_tagger.frontend(torch.from_numpy(segments))).numpy()
    assert vectors.windows.shape == (len(segments), mel_tagger.embedding_dim)
    np.testing.assert_allclose(vectors.windows, expected, atol=1e-6)
    np.testing.assert_allclose(vectors.clip, expected.mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(mel_tagger.tag(x, 16_000).embeddings, vectors.windows, atol=1e-6)


def _mp3(path, seconds=20.0):
    sf.write(path, noise(seconds, 16_000) * 2, 16_000, format="MP3")
    return path.read_bytes()


def test_a_file_a_little_short_is_tagged_with_a_note_and_a_cut_one_is_refused(mel_tagger, tmp_path):
    data = _mp3(tmp_path / "full.mp3")
    (tmp_path / "short.mp3").write_bytes(data[:-400])  # the last frames lost, like a misplaced Ogg page
    (tmp_path / "half.mp3").write_bytes(data[:len(data) // 2])
    result = mel_tagger.tag(tmp_path / "short.mp3")
    assert 0 < result.shortfall_s < 0.2 and result.to_dict(TAGS)["shortfall_s"] == round(result.shortfall_s, 3)
    with pytest.raises(AudioDecodeError, match="truncated or corrupt: decoded"):
        mel_tagger.tag(tmp_path / "half.mp3")
    # the strict decoder of the store and of a plain decode still refuses any shortfall
    with pytest.raises(AudioDecodeError, match="truncated or corrupt"):
        load_audio(tmp_path / "short.mp3")


def test_the_journal_keeps_whole_records_and_drops_a_torn_one(tmp_path):
    path = tmp_path / "tags.csv.journal"
    writer = JournalWriter(path)
    for i in range(3):
        writer.add(Record({"path": f"/m/{i}.mp3", "size": i, "mtime_ns": 7, "status": "ok"},
                          np.full(5, i, np.float32), np.full(4, -i, np.float32)))
    writer.add(Record({"path": "/m/bad.mp3", "size": 1, "mtime_ns": 1, "status": "error", "reason": "empty"}))
    writer.close()
    whole = path.read_bytes()
    path.write_bytes(whole + whole[len(MAGIC):len(MAGIC) + 30])  # a kill in the middle of a record
    records = read_journal(path, 5, 4)
    assert sorted(records) == ["/m/0.mp3", "/m/1.mp3", "/m/2.mp3", "/m/bad.mp3"]
    assert path.read_bytes() == whole  # truncated after the last whole record
    np.testing.assert_array_equal(records["/m/2.mp3"].probs, np.full(5, 2))
    assert not records["/m/bad.mp3"].ok and records["/m/1.mp3"].key == ("/m/1.mp3", 1, 7)
    with pytest.raises(DataError, match="another model"):
        read_journal(path, 6, 4)
    (tmp_path / "other").write_bytes(b"not a journal")
    with pytest.raises(DataError, match="not a catalogue journal"):
        read_journal(tmp_path / "other", 5, 4)


def test_nearest_tracks_by_cosine_similarity_and_another_models_embeddings_refused(tmp_path, mel_tagger):
    vectors = np.array([[1, 0, 0], [0.9, 0.1, 0], [0, 1, 0], [-1, 0, 0]], np.float32)
    index = EmbeddingIndex(vectors, ["a", "b", "c", "d"], "x", "mel_cnn")
    assert [m.path for m in index.nearest(np.array([1.0, 0, 0]), 3)] == ["a", "b", "c"]
    assert [m.path for m in index.nearest(np.array([1.0, 0, 0]), 2, exclude="a")] == ["b", "c"]
    assert index.nearest(np.array([2.0, 0, 0]), 1)[0].similarity == pytest.approx(1.0)
    with pytest.raises(ConfigError, match="another model"):
        index.check_model(mel_tagger)


@pytest.mark.parametrize("name", list(MODELS))
def test_export_and_reload_give_equal_probabilities_for_every_model(name, tmp_path):
    tagger = small_tagger(name)
    folder = export_model(tagger, tmp_path / "exported", command=["--export", "RUN"])
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    reloaded = Tagger.from_pretrained(folder)
    x = noise(7.0, 22_050, channels=2)
    np.testing.assert_array_equal(reloaded.tag(x, 22_050).probs, tagger.tag(x, 22_050).probs)
    assert reloaded.identity == tagger.identity and reloaded.tags == TAGS
    np.testing.assert_array_equal(reloaded.thresholds, tagger.thresholds)
    card = (folder / "README.md").read_text()
    assert f"# {name}" in card and "exported by: `python run.py --export RUN`" in card


def test_an_exported_folder_checks_its_weights(tmp_path, mel_tagger):
    folder = export_model(mel_tagger, tmp_path / "exported")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "thresholds": [0.9] * len(TAGS)}))
    with pytest.raises(DataError, match="differ from those exported"):
        Tagger.from_pretrained(folder)
    (folder / "config.json").write_text(json.dumps({**config, "format": "other"}))
    with pytest.raises(DataError, match="not an exported model"):
        Tagger.from_pretrained(folder)
    with pytest.raises(ConfigError, match="not an exported model folder"):
        export_model(mel_tagger, tmp_path)  # a folder holding other things


def test_mel_settings_travel_with_the_export(tmp_path):
    tagger = small_tagger("lstm_mel")
    reloaded = Tagger.from_pretrained(export_model(tagger, tmp_path / "e"))
    assert reloaded.mel_config == tagger.mel_config and isinstance(reloaded.mel_config, MelConfig)
    assert reloaded.layout == tagger.layout and reloaded.segment_samples == tagger.segment_samples
