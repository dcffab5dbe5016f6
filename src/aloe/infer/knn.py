"""kNN few-shot: the pool's questions most similar to each test question, as worked examples.

The pool is embedded once and persisted under the index dir, named by a hash of the embedding
model and the pool's ids and questions, so any change to either builds a fresh index.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from aloe.models.embeddings import MAX_TOKENS, DenseIndex, content_key, embed
from aloe.records import MCQ


def _embed_text(q: MCQ) -> str:
    return q.question


def pool_index(pool: Sequence[MCQ], model: str, index_dir: Path) -> DenseIndex:
    key = content_key("knn", model, MAX_TOKENS, [(p.id, p.question) for p in pool])
    directory = index_dir / f"knn-{key}"
    return DenseIndex.load_or_build(directory, [p.id for p in pool], [_embed_text(p) for p in pool],
                                    index_dir / "embeddings", model, progress=len(pool) > 500)


def nearest_shots(questions: Sequence[MCQ], pool: Sequence[MCQ], k: int, model: str,
                  index_dir: Path) -> list[list[MCQ]]:
    """For each question, its k nearest pool examples ordered least similar first, most similar last.

    The question itself (same id or same text) is never its own example.
    """
    if k <= 0 or not questions:
        return [[] for _ in questions]
    by_id = {p.id: p for p in pool}
    if len(by_id) != len(pool):
        raise ValueError("few-shot pool: ids are not unique")
    index = pool_index(pool, model, index_dir)
    hits = index.search_vectors(embed([_embed_text(q) for q in questions], model), k + 1)
    out = []
    for q, row in zip(questions, hits, strict=True):
        shots = [by_id[index.ids[i]] for i, _ in row]
        shots = [s for s in shots if s.id != q.id and s.question != q.question][:k]
        if len(shots) < k:
            raise ValueError(f"few-shot pool has {len(shots)} usable examples for {q.id}, {k} requested")
        out.append(shots[::-1])
    return out
