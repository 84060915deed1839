"""`Tagger`: a trained model ready to tag audio, the one class behind `run.py --tag` and the Python API.

    from tagging.tagger import Tagger

    tagger = Tagger.from_checkpoint("runs/mel_cnn-seed0-1a2b3c4d")   # a run folder or a .ckpt
    tagger = Tagger.from_pretrained("exported/mel_cnn")              # a folder of `run.py --export`
    result = tagger.tag("song.mp3")          # clip probabilities, tags above thresholds, top k
    gram = tagger.taggram("song.mp3")        # probabilities over time (`tagging.taggram`)
    vectors = tagger.embed("song.mp3")       # penultimate features, per window and per clip

A model carries everything it needs (network config and weights, tag list, Mel settings, segment
layout, the per-tag thresholds chosen on validation and which of them fell back to 0.5), so no
dataset is involved. Every method takes a file path (any format soundfile reads: MP3, WAV, FLAC,
OGG/Vorbis/Opus, AIFF, ...) or a waveform (a NumPy array or a torch tensor, mono or with channels,
with its `sample_rate`), of any rate, channel count and length: the channels are averaged, the
rate is converted to the model's (torchaudio's sinc filter, as the decoder does), and the audio is
cut into the model's segments as evaluation cuts a clip (`tagging.reading`). A file is read piece by
piece, so memory does not grow with its length.

* `tag`: the segment probabilities averaged per file, as evaluation averages them per clip; the
  tags whose probability reaches their threshold (each `TagScore` says whether its threshold fell
  back: True, False, or None when the checkpoint predates that record) and the top k.
* `embed`: the network's penultimate representation (`TaggingNetwork.embed`) of each segment, and
  their mean: the clip embedding that similarity search compares (`tagging.similar`).
* `taggram`: the model's input window centred on every hop of the song (`tagging.taggram`).

`tags`, `thresholds`, `sample_rate`, `segment_samples` and `identity` (a digest of the weights, tag
list, thresholds and input settings: outputs made by one model carry it) are exposed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from datamodules.decoding import AudioDecodeError, DecodedAudio, decode_audio, resample
from datamodules.frontend import MelConfig, build_frontend
from datamodules.segments import SegmentLayout
from infrastructure.errors import ConfigError
from tagging.reading import cut_segments, plan_file, read_segments, segment_starts, tagging_decoder
from tagging.taggram import DEFAULT_TAGGRAM_HOP_S, Taggram, compute_taggram

DEFAULT_TOP_K = 5
DEFAULT_BATCH_SIZE = 16
"""Segments per forward pass."""

# One decoder for the cache and for tagging (datamodules/decoding.py).
AudioError = AudioDecodeError
LoadedAudio = DecodedAudio
load_audio = decode_audio
__all__ = ["AudioError", "Embedding", "TagResult", "TagScore", "Tagger", "cut_segments", "load_audio",
           "segment_starts"]


class TagScore(NamedTuple):
    """One tag's score for a file, with its threshold and whether that threshold fell back to 0.5."""

    tag: str
    score: float
    threshold: float
    threshold_fell_back: bool | None  # None: unknown (a checkpoint from before fallbacks were recorded)


@dataclass
class TagResult:
    """What the model says about one file or waveform (`Tagger.tag`)."""

    path: str | None
    probs: np.ndarray  # (T,) segment-averaged probabilities
    segment_probs: np.ndarray  # (S, T)
    segment_starts_s: np.ndarray  # (S,) seconds from the excerpt's start
    segment_seconds: float
    tags: list[TagScore]  # at or above their thresholds, highest first
    top: list[TagScore]  # the top-k, highest first
    audio_seconds: float
    start_s: float
    source_rate: int
    channels: int
    shortfall_s: float = 0.0  # audio the file declares but did not deliver (tagged as silence)
    thresholds: np.ndarray = field(repr=False, default=None)
    fell_back: dict[str, bool | None] = field(repr=False, default=None)
    embeddings: np.ndarray = field(repr=False, default=None)  # (S, D) segment embeddings
    taggram: Taggram | None = field(repr=False, default=None)  # the CLI's --taggram, when asked for

    def to_dict(self, tag_names=None) -> dict:
        """Plain JSON-able values: the tags above threshold, the top-k and every tag's score."""
        names = list(tag_names) if tag_names is not None else list(self.fell_back)

        def entry(score: TagScore) -> dict:
            return {"tag": score.tag, "score": round(score.score, 6), "threshold": round(score.threshold, 6),
                    "threshold_fell_back": score.threshold_fell_back}

        out = {
            "path": self.path, "start_s": self.start_s, "duration_s": round(self.audio_seconds, 3),
            "source_sample_rate": self.source_rate, "channels": self.channels,
            "segments": int(len(self.segment_starts_s)),
            "tags": [entry(t) for t in self.tags],
            "top": [entry(t) for t in self.top],
            "scores": {t: round(float(p), 6) for t, p in zip(names, self.probs)},
        }
        if self.shortfall_s:
            out["shortfall_s"] = round(self.shortfall_s, 3)
        return out


@dataclass
class Embedding:
    """Penultimate features (`Tagger.embed`): one row per segment (`windows`) and their mean (`clip`)."""

    windows: np.ndarray  # (S, D) float32
    clip: np.ndarray  # (D,) float32
    starts_s: np.ndarray  # (S,) segment starts, seconds from the excerpt's start
    window_s: float


def resolve_device(accelerator: str | torch.device | None) -> torch.device:
    """`auto` (a GPU when there is one), `cpu`, `gpu`/`cuda`, or a torch device."""
    if isinstance(accelerator, torch.device):
        return accelerator
    accelerator = (accelerator or "auto").lower()
    if accelerator in ("auto", "gpu", "cuda"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if accelerator != "auto":
            raise ConfigError(f"--accelerator {accelerator}: no CUDA device here")
        return torch.device("cpu")
    if accelerator == "cpu" or accelerator.startswith("cuda:"):
        return torch.device(accelerator)
    raise ConfigError(f"--accelerator {accelerator}: tagging runs on cpu, gpu or auto")


class Tagger:
    """A trained network with its frontend, tag list and thresholds (see the module docstring).

    Build one with `from_checkpoint`, `from_pretrained` or `from_module`; the constructor takes the parts.

    Args:
        network: the `TaggingNetwork` (its weights loaded).
        config: the model's description: ``network`` (the registry config), ``tags``, ``thresholds``,
            ``threshold_fell_back`` (True/False/None per tag), ``frontend`` (`MelConfig.to_dict()` or None),
            ``layout`` (`SegmentLayout.to_dict()`), ``sample_rate``.
        device: where the frontend and network run (`resolve_device`: "auto", "cpu", "gpu", ...).
        batch_size: segments per forward pass.
        source: where the model came from (shown in outputs and the model card).
    """

    def __init__(self, network: torch.nn.Module, config: dict, *, device: str | torch.device = "cpu",
                 batch_size: int = DEFAULT_BATCH_SIZE, source: str | None = None, card: dict | None = None):
        self.config = {key: config[key] for key in ("network", "tags", "thresholds", "threshold_fell_back",
                                                    "frontend", "layout", "sample_rate")}
        self.device = resolve_device(device)
        self.network = network.to(self.device).eval()
        self.tags: list[str] = list(config["tags"])
        self.thresholds = np.asarray(config["thresholds"], dtype=np.float64)
        self.fell_back: list[bool | None] = list(config["threshold_fell_back"])
        self.sample_rate = int(config["sample_rate"])
        self.layout = SegmentLayout.from_dict(dict(config["layout"]))
        mel = config["frontend"]
        self.mel_config = MelConfig.from_dict(dict(mel)) if mel is not None else None
        self.frontend = build_frontend(self.mel_config).to(self.device)
        if batch_size < 1:
            raise ConfigError(f"batch size must be at least 1, got {batch_size}")
        self.batch_size = int(batch_size)
        self.source = source
        self.card = card or {}
        self._identity: str | None = None
        self._decoder = tagging_decoder(self.sample_rate)

    # ---- construction -------------------------------------------------------------------------------------------
    @classmethod
    def from_module(cls, module, **kwargs) -> Tagger:
        """From a `TaggingModule` (its network, hyperparameters and threshold buffers)."""
        from lightning_modules.metrics import fallback_states

        hp = module.hparams
        config = {"network": dict(hp.network_config), "tags": list(hp.tags),
                  "thresholds": [float(t) for t in module.thresholds.detach().cpu().float()],
                  "threshold_fell_back": fallback_states(module.threshold_fallback.detach().cpu()),
                  "frontend": dict(hp.frontend) if hp.frontend is not None else None,
                  "layout": dict(hp.layout), "sample_rate": int(hp.sample_rate)}
        return cls(module.network, config, **kwargs)

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "cpu",
                        batch_size: int = DEFAULT_BATCH_SIZE) -> Tagger:
        """From a `.ckpt` file or a run folder (its best checkpoint, as `--evaluate` finds it).

        Raises:
            DataError: no such file or folder, or not a checkpoint of this suite (one line).
        """
        from experiments.run_folder import locate_checkpoint
        from lightning_modules.tagging_module import TaggingModule

        checkpoint, run_dir = locate_checkpoint(path)
        tagger = cls.from_module(TaggingModule.from_checkpoint(checkpoint, map_location="cpu"), device=device,
                                 batch_size=batch_size, source=str(checkpoint))
        tagger.run_dir = run_dir
        return tagger

    @classmethod
    def from_pretrained(cls, folder: str | Path, device: str | torch.device = "cpu",
                        batch_size: int = DEFAULT_BATCH_SIZE) -> Tagger:
        """From a folder written by `run.py --export` (`tagging.export`): no run folder or data needed."""
        from tagging.export import load_pretrained

        return load_pretrained(cls, folder, device=device, batch_size=batch_size)

    run_dir: Path | None = None

    # ---- what the model is --------------------------------------------------------------------------------------
    @property
    def segment_samples(self) -> int:
        """The model's input length in samples (a segment of the evaluation cut, a taggram window)."""
        return self.layout.segment_samples

    @property
    def model_name(self) -> str:
        return str(self.config["network"].get("name"))

    @property
    def embedding_dim(self) -> int:
        return int(self.network.embedding_dim)

    @property
    def identity(self) -> str:
        """A digest of the weights, tags, thresholds and input settings: equal for a checkpoint and its export."""
        if self._identity is None:
            digest = hashlib.sha256()
            digest.update(json.dumps(self.config, sort_keys=True, default=str).encode())
            for name, tensor in sorted(self.network.state_dict().items()):
                digest.update(name.encode())
                digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
            self._identity = digest.hexdigest()[:16]
        return self._identity

    # ---- inference --------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def infer(self, segments: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities (S, T) float64, embeddings (S, D) float32) of (S, segment_samples) waveforms at the
        model's rate, `batch_size` segments per forward pass."""
        probs, embeddings = [], []
        for begin in range(0, len(segments), self.batch_size):
            batch = torch.from_numpy(np.array(segments[begin:begin + self.batch_size], copy=True,
                                                          dtype=np.float32)).to(self.device)
            embedding = self.network.embed(self.frontend(batch))
            logits = self.network.classify(embedding)
            probs.append(torch.sigmoid(logits.float()).cpu())
            embeddings.append(embedding.float().cpu())
        if not probs:
            return np.zeros((0, len(self.tags))), np.zeros((0, self.embedding_dim), np.float32)
        return torch.cat(probs).double().numpy(), torch.cat(embeddings).numpy()

    def segment_probabilities(self, segments: np.ndarray) -> np.ndarray:
        """(S, T) tag probabilities of (S, segment_samples) float waveforms."""
        return self.infer(segments)[0]

    def ranked(self, probs: np.ndarray, top_k: int = DEFAULT_TOP_K) -> tuple[list[TagScore], list[TagScore]]:
        """(tags at or above their thresholds, top-k), each from the highest score."""
        order = np.argsort(-probs, kind="stable")

        def score(i: int) -> TagScore:
            return TagScore(self.tags[i], float(probs[i]), float(self.thresholds[i]), self.fell_back[i])

        return [score(i) for i in order if probs[i] >= self.thresholds[i]], [score(i) for i in order[:top_k]]

    def _analyse(self, audio, sample_rate: int | None, start_s: float, duration_s: float | None) -> dict:
        """Segment probabilities and embeddings of a file (piece by piece) or a waveform, and what was read."""
        if isinstance(audio, (str, Path)):
            plan = plan_file(self._decoder, audio, self.segment_samples, start_s=start_s, duration_s=duration_s)
            probs, embeddings = [], []
            reader = read_segments(self._decoder, plan)
            while True:
                try:
                    _, segments = next(reader)
                except StopIteration as stop:
                    shortfall = stop.value
                    break
                p, e = self.infer(segments)
                probs.append(p)
                embeddings.append(e)
            info = plan.audio
            return {"path": str(audio), "probs": np.concatenate(probs), "embeddings": np.concatenate(embeddings),
                    "starts": np.asarray(plan.starts), "seconds": info.seconds, "start_s": info.start_s,
                    "source_rate": info.source_rate, "channels": info.channels,
                    "shortfall_s": shortfall / info.source_rate}
        mono, channels = self.waveform(audio, sample_rate, start_s, duration_s)
        segments, starts = cut_segments(mono, self.segment_samples)
        probs, embeddings = self.infer(segments)
        return {"path": None, "probs": probs, "embeddings": embeddings, "starts": starts,
                "seconds": len(mono) / self.sample_rate, "start_s": float(start_s), "source_rate": int(sample_rate),
                "channels": channels, "shortfall_s": 0.0}

    def waveform(self, audio, sample_rate: int | None, start_s: float = 0.0,
                 duration_s: float | None = None) -> tuple[np.ndarray, int]:
        """(mono float32 at the model's rate, channel count) of a waveform array or tensor.

        A 2-D array's channel axis is its shorter one: soundfile's (frames, channels) and torchaudio's
        (channels, frames) both work.
        """
        if sample_rate is None:
            raise ConfigError("a waveform needs its sample_rate (e.g. tagger.tag(x, sample_rate=44100))")
        if isinstance(audio, torch.Tensor):
            audio = audio.detach().cpu().numpy()
        x = np.asarray(audio, dtype=np.float32)
        if x.ndim == 2:
            channels = int(min(x.shape))
            x = x.mean(axis=int(np.argmin(x.shape)), dtype=np.float32)
        elif x.ndim == 1:
            channels = 1
        else:
            raise ConfigError(f"a waveform is 1-D (mono) or 2-D (with channels), got shape {x.shape}")
        if start_s < 0 or (duration_s is not None and duration_s <= 0):
            raise ConfigError(f"start must be >= 0 and duration > 0 seconds (got {start_s}, {duration_s})")
        first = int(round(start_s * sample_rate))
        last = len(x) if duration_s is None else min(len(x), first + int(round(duration_s * sample_rate)))
        x = x[first:last]
        if not len(x):
            raise ConfigError(f"no samples to tag (a waveform of {len(audio)} samples from {start_s:g} s)")
        if not np.isfinite(x).all():
            raise ConfigError("the waveform contains NaN or infinite samples")
        if int(sample_rate) != self.sample_rate:
            x = resample(x, int(sample_rate), self.sample_rate)
        return np.ascontiguousarray(x, dtype=np.float32), channels

    def tag(self, audio, sample_rate: int | None = None, *, top_k: int = DEFAULT_TOP_K, start_s: float = 0.0,
            duration_s: float | None = None) -> TagResult:
        """Tag a file or a waveform (see the module docstring); `start_s`/`duration_s` select an excerpt.

        Raises:
            AudioDecodeError: a file that cannot be tagged (missing, empty, not audio, truncated), one line.
            ConfigError: a waveform without its rate, or a bad excerpt.
        """
        if top_k < 1:
            raise ConfigError(f"top_k must be at least 1, got {top_k}")
        found = self._analyse(audio, sample_rate, start_s, duration_s)
        probs = found["probs"].mean(axis=0)
        above, top = self.ranked(probs, top_k)
        return TagResult(
            path=found["path"], probs=probs, segment_probs=found["probs"],
            segment_starts_s=found["starts"] / self.sample_rate, segment_seconds=self.segment_samples / self.sample_rate,
            tags=above, top=top, audio_seconds=found["seconds"], start_s=found["start_s"],
            source_rate=found["source_rate"], channels=found["channels"], shortfall_s=found["shortfall_s"],
            thresholds=self.thresholds, fell_back=dict(zip(self.tags, self.fell_back)),
            embeddings=found["embeddings"])

    def embed(self, audio, sample_rate: int | None = None, *, start_s: float = 0.0,
              duration_s: float | None = None) -> Embedding:
        """The penultimate features of each segment (the evaluation cut) and their mean, the clip embedding."""
        found = self._analyse(audio, sample_rate, start_s, duration_s)
        windows = found["embeddings"].astype(np.float32)
        return Embedding(windows, windows.mean(axis=0), found["starts"] / self.sample_rate,
                         self.segment_samples / self.sample_rate)

    def taggram(self, audio, sample_rate: int | None = None, *, hop_s: float = DEFAULT_TAGGRAM_HOP_S,
                start_s: float = 0.0, duration_s: float | None = None) -> Taggram:
        """Tag probabilities over time: the model's input centred on every hop (`tagging.taggram`)."""
        if isinstance(audio, (str, Path)):
            plan = self._decoder.plan(audio, start_s=start_s, duration_s=duration_s)
            span = self._decoder.read_span(plan, 0, plan.samples)
            self._decoder.finish(plan, span.decoded_end)
            return compute_taggram(self, span.samples, plan.start_s, hop_s)
        mono, _ = self.waveform(audio, sample_rate, start_s, duration_s)
        return compute_taggram(self, mono, float(start_s), hop_s)
