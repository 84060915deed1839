"""Similar songs: the tracks of a catalogue's embeddings nearest to a query, by cosine similarity.

    python run.py --similar query.mp3 --embeddings emb.npy --checkpoint RUN --top-k 10

`--tag DIR --out tags.csv --embeddings emb.npy` writes one clip embedding per file (the network's
penultimate features, averaged over the file's segments) with `emb.npy.json` beside it: the model's
identity and the rows' paths. The query is embedded with the same model; embeddings of another
model live in another space, so they are refused in one line. In Python:

    index = EmbeddingIndex.load("emb.npy")
    for match in index.nearest(tagger.embed("query.mp3").clip, top_k=10):
        print(match.similarity, match.path)
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from infrastructure.errors import ConfigError, DataError


class Match(NamedTuple):
    path: str
    similarity: float


@dataclass
class EmbeddingIndex:
    """Clip embeddings (rows, D) with the rows' paths and the identity of the model that made them."""

    vectors: np.ndarray
    paths: list[str]
    identity: str
    model: str

    @classmethod
    def load(cls, path: str | Path) -> EmbeddingIndex:
        """An embeddings file of `--tag --out ... --embeddings PATH` (.npy or .parquet, with PATH.json)."""
        from tagging.catalogue import embeddings_index_of

        path = Path(path).expanduser().resolve()
        meta_path = embeddings_index_of(path)
        if not path.is_file():
            raise DataError(f"{path}: no such embeddings file")
        if not meta_path.is_file():
            raise DataError(f"{path}: no {meta_path.name} beside it (written with the embeddings by --tag --out "
                            "--embeddings): cannot tell which model and files its rows are")
        try:
            meta = json.loads(meta_path.read_text())
        except ValueError as error:
            raise DataError(f"{meta_path}: not readable JSON ({error})") from None
        if path.suffix.lower() == ".npy":
            vectors = np.load(path, allow_pickle=False)
        else:
            import pandas as pd

            frame = pd.read_parquet(path)
            vectors = frame[[c for c in frame.columns if c != "path"]].to_numpy(dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) != len(meta["paths"]):
            raise DataError(f"{path}: {vectors.shape} embeddings for {len(meta['paths'])} paths in {meta_path.name}")
        return cls(np.asarray(vectors, dtype=np.float32), list(meta["paths"]), meta["identity"], meta.get("model", "?"))

    def check_model(self, tagger) -> None:
        """ConfigError unless `tagger` is the model that made these embeddings."""
        if tagger.identity != self.identity:
            raise ConfigError(f"these embeddings were made by another model ({self.model}, identity {self.identity}); "
                              f"--checkpoint is {tagger.model_name} {tagger.identity}: embed the catalogue with it, "
                              "or give the model that made them")

    def nearest(self, query: np.ndarray, top_k: int = 10, exclude: str | None = None) -> list[Match]:
        """The `top_k` rows most cosine-similar to `query` (D,), highest first; `exclude`: a path left out."""
        query = np.asarray(query, dtype=np.float64)
        if query.shape != (self.vectors.shape[1],):
            raise ConfigError(f"a query of shape {query.shape} for embeddings of dimension {self.vectors.shape[1]}")
        norms = np.linalg.norm(self.vectors, axis=1) * max(np.linalg.norm(query), 1e-12)
        similarity = (self.vectors.astype(np.float64) @ query) / np.maximum(norms, 1e-12)
        order = np.argsort(-similarity, kind="stable")
        matches = [Match(self.paths[i], float(similarity[i])) for i in order if self.paths[i] != exclude]
        return matches[:top_k]


def run_similar(query: str | Path, embeddings: str | Path, checkpoint: str | Path, *, top_k: int = 10,
                json_output: bool = False, accelerator: str = "auto") -> int:
    """Print the `top_k` tracks nearest to `query` (text, or JSON). The query itself is left out when listed."""
    from tagging.report import load_tagger

    index = EmbeddingIndex.load(embeddings)
    tagger = load_tagger(checkpoint, accelerator)
    index.check_model(tagger)
    query_path = Path(query).expanduser()
    matches = index.nearest(tagger.embed(query_path).clip, top_k, exclude=str(query_path.resolve()))
    if json_output:
        print(json.dumps({"query": str(query_path), "model": tagger.model_name, "identity": tagger.identity,
                          "matches": [m._asdict() for m in matches]}, indent=2))
    else:
        for rank, match in enumerate(matches, 1):
            print(f"{rank:3d}  {match.similarity:.4f}  {match.path}")
        if len(matches) < top_k:
            print(f"({len(index.paths)} track(s) in {embeddings})", file=sys.stderr)
    return 0
