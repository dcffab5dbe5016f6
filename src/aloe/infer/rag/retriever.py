"""BM25 (bm25s) and dense retrieval over a chunked corpus, fused with reciprocal rank fusion.

Indexes are built once per (corpus content, chunk size, embedding model) and persisted under the
index dir; each index folder gets its completion marker last, so a build killed midway is redone
rather than loaded half-written. Only passage text is indexed: titles are shown in the prompt but
not searched, because in the shared corpus a PubMed passage's title is the PubMedQA question
itself, which would make retrieving it for that question trivial.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from aloe.infer.config import InferConfig
from aloe.infer.rag.corpus import chunk_passages, read_passages
from aloe.infer.rag.fusion import reciprocal_rank_fusion
from aloe.io import iter_jsonl, write_json, write_jsonl
from aloe.models.embeddings import DEFAULT_EMBEDDING_MODEL, MAX_TOKENS, DenseIndex, content_key
from aloe.records import Passage

log = logging.getLogger(__name__)

METHODS = ("bm25", "dense", "fused")


@dataclass
class Hit:
    id: str
    score: float


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _bm25_tokens(texts: Sequence[str]) -> list[list[str]]:
    import bm25s

    return bm25s.tokenize(list(texts), stopwords="en", return_ids=False, show_progress=False)


class Retriever:
    """Search a corpus by BM25, dense embeddings, or both fused; indexes load or build lazily."""

    def __init__(self, corpus: str | Path, index_dir: Path, embedding_model: str = DEFAULT_EMBEDDING_MODEL,
                 chunk_chars: int = 1000, rrf_k: float = 60.0, candidates: int = 50,
                 passage_max_tokens: int = MAX_TOKENS):
        self.corpus = Path(corpus)
        if not self.corpus.is_file():
            raise FileNotFoundError(f"RAG corpus not found: {self.corpus}")
        self.embedding_model, self.rrf_k, self.candidates = embedding_model, rrf_k, candidates
        self.passage_max_tokens = passage_max_tokens
        key = content_key("rag", _file_digest(self.corpus), chunk_chars)
        self.root = index_dir / f"rag-{key}"
        self.passages = self._load_chunks(chunk_chars)
        self.by_id = {p.id: p for p in self.passages}
        self._bm25 = None
        self._dense: DenseIndex | None = None

    @classmethod
    def from_config(cls, config: InferConfig) -> Retriever:
        rc = config.rag
        return cls(rc.corpus, config.index_dir, config.embedding_model, rc.chunk_chars, rc.rrf_k, rc.candidates,
                   rc.passage_max_tokens)

    def _load_chunks(self, chunk_chars: int) -> list[Passage]:
        path = self.root / "passages.jsonl"
        if path.is_file():
            return [Passage(id=d["id"], text=d["text"], source=d["source"], title=d.get("title"))
                    for _, d in iter_jsonl(path)]
        passages = chunk_passages(read_passages(self.corpus), chunk_chars)
        write_jsonl(path, [p.to_dict() for p in passages])
        return passages

    @property
    def bm25(self):  # noqa: ANN201 - bm25s.BM25
        if self._bm25 is None:
            import bm25s

            directory = self.root / "bm25"
            if (directory / "complete.json").is_file():
                self._bm25 = bm25s.BM25.load(str(directory))
            else:
                log.info("building the BM25 index of %d passages", len(self.passages))
                index = bm25s.BM25()
                index.index(_bm25_tokens([p.text for p in self.passages]), show_progress=False)
                index.save(str(directory), show_progress=False)
                write_json(directory / "complete.json", {"passages": len(self.passages)})
                self._bm25 = index
        return self._bm25

    @property
    def dense_dir(self) -> Path:
        return self.root / f"dense-{content_key(self.embedding_model, self.passage_max_tokens)}"

    @property
    def dense(self) -> DenseIndex:
        if self._dense is None:
            self._dense = DenseIndex.load_or_build(
                self.dense_dir, [p.id for p in self.passages], [p.text for p in self.passages],
                self.root.parent / "embeddings", self.embedding_model, self.passage_max_tokens,
                progress=len(self.passages) > 1000)
        return self._dense

    def warm(self, method: str) -> None:
        """Load (or build) the indexes `method` needs, so the first query pays nothing extra."""
        if method in ("bm25", "fused"):
            _ = self.bm25
        if method in ("dense", "fused"):
            _ = self.dense

    def _bm25_search(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        k = min(k, len(self.passages))
        docs, scores = self.bm25.retrieve(_bm25_tokens(queries), k=k, show_progress=False)
        return [[Hit(self.passages[int(d)].id, float(s)) for d, s in zip(row_d, row_s, strict=True) if s > 0]
                for row_d, row_s in zip(docs, scores, strict=True)]

    def _dense_search(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        return [[Hit(i, s) for i, s in row] for row in self.dense.search(queries, k)]

    def search(self, queries: Sequence[str], top_k: int, method: str = "fused") -> list[list[Hit]]:
        """The top_k passages for each query, best first."""
        if method not in METHODS:
            raise ValueError(f"retriever {method!r}: expected one of {', '.join(METHODS)}")
        if not queries:
            return []
        if method == "bm25":
            return [row[:top_k] for row in self._bm25_search(queries, max(top_k, 1))]
        if method == "dense":
            return self._dense_search(queries, top_k)
        n = max(self.candidates, top_k)
        fused = []
        for b, d in zip(self._bm25_search(queries, n), self._dense_search(queries, n), strict=True):
            ranked = reciprocal_rank_fusion([[h.id for h in b], [h.id for h in d]], k=self.rrf_k)
            fused.append([Hit(i, s) for i, s in ranked[:top_k]])
        return fused
