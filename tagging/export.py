"""A portable model: `run.py --export RUN_DIR --out DIR [--format onnx]`, read back by `Tagger.from_pretrained(DIR)`.

The folder holds:

* `model.safetensors`: the network's weights (safetensors: no pickle, so loading it runs no code);
* `config.json`: the network config (the registry's, `build_network` rebuilds the architecture),
  the Mel settings, the segment layout and rate, the tag list, the per-tag thresholds and which of
  them fell back to 0.5, the embedding size and the model's `identity` (a digest of all of these:
  loading checks it, and catalogue outputs made with the model carry it);
* `README.md`: a model card: training data, protocol, recipe, test metrics, and the commands that
  trained and exported the model;
* with `--format onnx`, `model.onnx`: the Mel frontend and the network as one ONNX graph (opset
  `ONNX_OPSET`, exported by torch's dynamo exporter), waveform segments (batch, samples) at the
  model's rate in, tag probabilities (batch, tags) and embeddings (batch, D) out: it runs with
  onnxruntime and NumPy alone, without this suite or torch. Cutting a file into segments and
  averaging them per file is the caller's part there (docs/tagging.md shows it).

`Tagger.from_pretrained` needs the suite installed (it builds the network from the registry) but
not the run folder, the checkpoint or any data.
"""

from __future__ import annotations

import contextlib
import io
import json
import shlex
import sys
from pathlib import Path

from infrastructure.errors import ConfigError, DataError
from infrastructure.io import atomic_path, write_json_atomic, write_text_atomic

FORMAT = "mtat-tagging-pretrained"
FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
ONNX_NAME = "model.onnx"
CARD_NAME = "README.md"
ONNX_OPSET = 18
EXPORT_FORMATS = ("safetensors", "onnx")


def is_exported(path: str | Path) -> bool:
    """True for a folder written by `export_model` (it holds config.json and model.safetensors)."""
    path = Path(path).expanduser()
    return path.is_dir() and (path / CONFIG_NAME).is_file() and (path / WEIGHTS_NAME).is_file()


def load_pretrained(cls, folder: str | Path, device="cpu", batch_size: int = 16):
    """`Tagger.from_pretrained`: build the network from config.json, load model.safetensors, check the identity.

    Raises:
        DataError: not an exported folder, another format, or weights that do not match the config (one line).
    """
    from safetensors.torch import load_file

    from lightning_modules.registry import build_network

    folder = Path(folder).expanduser().resolve()
    config_path = folder / CONFIG_NAME
    if not config_path.is_file() or not (folder / WEIGHTS_NAME).is_file():
        raise DataError(f"{folder}: not an exported model (expected {CONFIG_NAME} and {WEIGHTS_NAME}; "
                        "make one with run.py --export RUN_DIR --out DIR)")
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as error:
        raise DataError(f"{config_path}: not readable JSON ({error})") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise DataError(f"{config_path}: not an exported model of this suite (format {FORMAT!r} expected)")
    if config.get("format_version", 0) > FORMAT_VERSION:
        raise DataError(f"{config_path}: format version {config['format_version']} is newer than this suite's "
                        f"({FORMAT_VERSION}); update the suite")
    network = build_network(config["network"])
    try:
        state = load_file(str(folder / WEIGHTS_NAME))
        network.load_state_dict(state, strict=True)
    except Exception as error:  # a truncated file, weights of another architecture
        raise DataError(f"{folder / WEIGHTS_NAME}: cannot load these weights into {config['network'].get('name')} "
                        f"({type(error).__name__}: {str(error).splitlines()[0]})") from None
    tagger = cls(network, config, device=device, batch_size=batch_size, source=str(folder), card=config.get("card"))
    if config.get("identity") and tagger.identity != config["identity"]:
        raise DataError(f"{folder}: the weights or settings differ from those exported (identity {tagger.identity}, "
                        f"config.json says {config['identity']})")
    return tagger


def export_model(tagger, out: str | Path, *, formats: tuple[str, ...] = ("safetensors",),
                 command: list[str] | None = None) -> Path:
    """Write `tagger`'s model into the folder `out` (see the module docstring); returns the folder.

    Files are written whole or not at all (atomic renames); an existing export in `out` is replaced,
    any other non-empty folder is refused.
    """
    from safetensors.torch import save_file

    unknown = sorted(set(formats) - set(EXPORT_FORMATS))
    if unknown:
        raise ConfigError(f"--format {', '.join(unknown)}: choose among {', '.join(EXPORT_FORMATS)}")
    out = Path(out).expanduser().resolve()
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not is_exported(out))):
        raise ConfigError(f"--out {out}: exists and is not an exported model folder; give a new or empty folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise ConfigError(f"--out {out}: cannot write there ({error.strerror or error})") from None
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in tagger.network.state_dict().items()}
    with atomic_path(out / WEIGHTS_NAME) as tmp:
        save_file(state, str(tmp), metadata={"format": FORMAT, "identity": tagger.identity})
    card = model_card_facts(tagger, command)
    config = {"format": FORMAT, "format_version": FORMAT_VERSION, **tagger.config,
              "embedding_dim": tagger.embedding_dim, "identity": tagger.identity, "card": card}
    if "onnx" in formats:
        export_onnx(tagger, out / ONNX_NAME)
        config["onnx"] = {"file": ONNX_NAME, "opset": ONNX_OPSET, "input": "waveform",
                          "outputs": ["probabilities", "embedding"], "segment_samples": tagger.segment_samples}
    write_json_atomic(out / CONFIG_NAME, config)
    write_text_atomic(out / CARD_NAME, model_card(config))
    return out


class _Graph:
    """The frontend and network as one module for the ONNX exporter: waveform -> (probabilities, embedding)."""

    @staticmethod
    def build(tagger):
        import torch

        class Graph(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.frontend, self.network = tagger.frontend, tagger.network

            def forward(self, waveform):
                embedding = self.network.embed(self.frontend(waveform))
                return torch.sigmoid(self.network.classify(embedding)), embedding

        return Graph().eval()


def export_onnx(tagger, path: Path) -> Path:
    """The frontend and network as one ONNX graph at `path` (batch dimension dynamic); the exporter's own
    chatter is kept off stdout and shown only if it fails."""
    import torch

    graph = _Graph.build(tagger).to("cpu")
    example = torch.zeros(2, tagger.segment_samples)
    chatter = io.StringIO()
    try:
        with atomic_path(path) as tmp, contextlib.redirect_stdout(chatter), contextlib.redirect_stderr(chatter):
            torch.onnx.export(graph, (example,), str(tmp), dynamo=True, opset_version=ONNX_OPSET,
                              input_names=["waveform"], output_names=["probabilities", "embedding"],
                              dynamic_shapes=({0: torch.export.Dim("batch")},), external_data=False)
    except Exception as error:
        raise ConfigError(f"--format onnx: {tagger.model_name} does not export to ONNX "
                          f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})") from None
    finally:
        tagger.network.to(tagger.device)
        tagger.frontend.to(tagger.device)
    return path


def model_card_facts(tagger, command: list[str] | None) -> dict:
    """What the model card says, from the run folder when there is one (config.json, metrics.json)."""
    facts: dict = {"model": tagger.model_name, "source": tagger.source, "tags": len(tagger.tags),
                   "input_seconds": round(tagger.segment_samples / tagger.sample_rate, 3),
                   "sample_rate": tagger.sample_rate,
                   "export_command": shlex.join(["python", "run.py", *(command if command is not None
                                                                         else sys.argv[1:])])}
    facts.update(tagger.card or {})
    run_dir = getattr(tagger, "run_dir", None)
    if run_dir is None:
        return facts
    run_dir = Path(run_dir)
    try:
        options = json.loads((run_dir / "config.json").read_text())
    except (OSError, ValueError):
        options = {}
    try:
        metrics = json.loads((run_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        metrics = {}
    keys = ("dataset", "data", "tags", "n_tags", "split", "synthetic_clips", "synthetic_clip_samples", "recipe",
            "optimizer", "lr", "batch_size", "max_epochs", "seed", "precision")
    facts["training"] = {k: options[k] for k in keys if k in options}
    resolved = options.get("resolved") or {}
    if "clip_samples" in resolved:
        facts["training"]["clip_samples"] = resolved["clip_samples"]
    if options:
        facts["training_command"] = f"python run.py --config {run_dir / 'config.yaml'}"
    test = metrics.get("test") or {}
    facts["test_metrics"] = {k: round(float(test[k]), 4) for k in ("roc_auc", "pr_auc", "tpr", "fpr")
                             if isinstance(test.get(k), (int, float))}
    if "n_clips" in test:
        facts["test_metrics"]["clips"] = test["n_clips"]
    if "epochs" in metrics:
        facts["training"]["epochs_trained"] = metrics["epochs"]
    return facts


def model_card(config: dict) -> str:
    """The README.md of an exported folder."""
    card = config.get("card", {})
    training = card.get("training", {})
    metrics = card.get("test_metrics", {})
    fell = sum(1 for v in config["threshold_fell_back"] if v)
    unknown = sum(1 for v in config["threshold_fell_back"] if v is None)
    data = training.get("data")
    dataset = training.get("dataset", "mtat")
    where = ("the generated stand-in (`--data synthetic`: synthesised clips laid out like MTAT; its tags are far "
             "easier than real music's, so these numbers say nothing of real MTAT)" if data == "synthetic"
             else f"`{data}`" if data else "unknown (the model was exported from a checkpoint without its run folder)")
    lines = [f"# {card.get('model', config['network'].get('name'))}: a music tagger exported by mtat-tagging", "",
             f"Model `{config['network'].get('name')}`, {len(config['tags'])} tags, identity `{config['identity']}`.",
             "", "## Use", "", "```python", "from tagging.tagger import Tagger", "",
             'tagger = Tagger.from_pretrained("THIS_FOLDER")', 'print(tagger.tag("song.mp3").tags)', "```", "",
             "or `python run.py --tag MUSIC/ --checkpoint THIS_FOLDER --out tags.csv`. Input: audio at any rate, "
             f"converted to {config['sample_rate']} Hz mono and cut into {card.get('input_seconds', '?')} s segments "
             "whose probabilities are averaged per file.", ""]
    if "onnx" in config:
        lines += [f"`{ONNX_NAME}` (opset {config['onnx']['opset']}) takes `waveform` (batch, "
                  f"{config['onnx']['segment_samples']}) float32 at {config['sample_rate']} Hz and returns "
                  "`probabilities` (batch, tags) and `embedding` (batch, D); it needs only onnxruntime.", ""]
    lines += ["## Training data", "", f"Dataset {dataset}, audio from {where}."]
    for key, label in (("tags", "vocabulary"), ("n_tags", "tags kept"), ("split", "split"),
                       ("synthetic_clips", "clips generated"), ("clip_samples", "clip length (samples)")):
        if key in training:
            lines.append(f"- {label}: {training[key]}")
    lines += ["", "## Protocol", "",
              "Clip-level evaluation: segment probabilities averaged per clip; per-tag thresholds chosen on the "
              "validation split where TPR = 1 - FPR, applied to the test split.",
              f"{fell} of {len(config['tags'])} thresholds fell back to 0.5 (too few validation positives)"
              + (f", {unknown} unknown" if unknown else "") + ".", "", "## Recipe", ""]
    recipe = {k: training[k] for k in ("recipe", "optimizer", "lr", "batch_size", "max_epochs", "epochs_trained",
                                       "seed", "precision") if k in training}
    lines += [f"- {k}: {v}" for k, v in recipe.items()] or ["unknown (no run folder)"]
    lines += ["", "## Test metrics", ""]
    lines += [f"- {k}: {v}" for k, v in metrics.items()] or ["not recorded"]
    lines += ["", "## Commands", ""]
    if card.get("training_command"):
        lines.append(f"- trained by: `{card['training_command']}` (the run's saved options)")
    lines.append(f"- exported by: `{card.get('export_command', '?')}`")
    lines += ["", "## Tags and thresholds", "", "| tag | threshold | fell back |", "|---|---|---|"]
    for tag, threshold, fallback in zip(config["tags"], config["thresholds"], config["threshold_fell_back"]):
        lines.append(f"| {tag} | {threshold:.4f} | {'unknown' if fallback is None else 'yes' if fallback else 'no'} |")
    return "\n".join(lines) + "\n"
