"""Decontamination: drop training items that overlap any registered benchmark's test split.

Two rules, both against each benchmark test item's question + options:

- `ngram`: the item shares word n-grams (13 by default, as in GPT-3 and lm-eval) covering at least
  `min_coverage` of the benchmark item's n-grams (a benchmark item shorter than n words matches as a
  whole). Coverage, not a single shared 13-gram, because exam boilerplate ("which of the following
  is the most likely cause of this patient's symptoms") is shared by unrelated questions; PaLM's and
  Llama 2's contamination analyses count coverage likewise.
- `contained`: lightly edited copies of short questions keep no 13-gram intact (two edits in a
  20-word question break every window), so for the benchmark items sharing a rarer short n-gram
  (`candidate_ngram`, 6, or a quarter of a short item's length) the item is dropped when the
  benchmark item's words it also holds carry at least `min_contained` of its IDF weight (and the
  question's words at least `min_question_contained` of the question's).

N-grams found in more than `max_benchmark_df` benchmark items are boilerplate and never count.
Optionally, items whose sentence embedding is within a cosine threshold of a benchmark item are
dropped too. Every removal is reported with the benchmark item it matched and the evidence.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from aloe.curate.config import DecontamConfig
from aloe.curate.dedup import words
from aloe.curate.items import Item, Step
from aloe.records import MCQ


def mcq_text(m: MCQ) -> str:
    return "\n".join([m.question, *m.options.values()])


def content_words(text: str) -> list[bytes]:
    """Words without single letters: option labels ("A.", "(b)") sit between options in training
    text but not in the benchmark's option list, and would break every n-gram across them."""
    return [w for w in words(text) if len(w) > 1 or not w.isalpha()]


def ngrams(toks: list[bytes], n: int) -> Iterator[bytes]:
    for k in range(len(toks) - n + 1):
        yield b" ".join(toks[k:k + n])


class _NgramIndex:
    """n-gram -> benchmark items, with n = n_of(item length); boilerplate removed."""

    def __init__(self, docs: list[list[bytes]], n_of: Callable[[int], int], max_df: int):
        postings: defaultdict[bytes, set[int]] = defaultdict(set)
        self.lengths: set[int] = set()
        self.sizes: list[int] = []
        for k, toks in enumerate(docs):
            m = n_of(len(toks))
            grams = set(ngrams(toks, m)) if m else set()
            self.sizes.append(len(grams))
            if m:
                self.lengths.add(m)
            for g in grams:
                postings[g].add(k)
        self.postings = {g: ks for g, ks in postings.items() if len(ks) <= max_df}

    def hits(self, toks: list[bytes]) -> Counter[int]:
        found: Counter[int] = Counter()
        for m in self.lengths:
            for g in set(ngrams(toks, m)):
                found.update(self.postings.get(g, ()))
        return found


class BenchmarkIndex:
    """The test splits of the chosen benchmarks, indexed for both rules."""

    def __init__(self, items: list[tuple[str, MCQ]], cfg: DecontamConfig):
        self.items, self.cfg = items, cfg
        self.tokens = [content_words(mcq_text(m)) for _, m in items]
        self.question_tokens = [content_words(m.question) for _, m in items]
        df = Counter(w for toks in self.tokens for w in set(toks))
        self.idf = {w: math.log((len(items) + 1) / (c + 1)) + 1 for w, c in df.items()}
        self.long = _NgramIndex(self.tokens, lambda n: min(cfg.ngram, n), cfg.max_benchmark_df)
        # a quarter of the item's length (2 at least), so a few edits leave some window intact
        self.short = _NgramIndex(self.tokens, lambda n: min(n, max(2, min(cfg.candidate_ngram, n // 4))),
                                 cfg.max_benchmark_df)

    @classmethod
    def from_registry(cls, cfg: DecontamConfig, data_dir: Path | None = None) -> BenchmarkIndex:
        from aloe.mcq.benchmarks import load_split, parse_benchmarks

        items = [(b.name, m) for b in parse_benchmarks(cfg.benchmarks) for m in load_split(b, "test", data_dir)]
        return cls(items, cfg)

    def _share(self, words_: list[bytes], toks: Counter[bytes]) -> float:
        want = Counter(words_)
        total = sum(self.idf[w] * c for w, c in want.items())
        return sum(self.idf[w] * min(c, toks[w]) for w, c in want.items()) / max(total, 1e-9)

    def contained(self, k: int, toks: Counter[bytes]) -> tuple[float, float]:
        """Shares of benchmark item k's IDF weight (whole item, question alone) that `toks` holds.

        Order-free, so swapped words cost nothing, and IDF-weighted, so a changed drug or disease
        name costs far more than a dropped "is" or "the". The question is checked on its own as
        well: "What kind of drug is quetiapine?" with the same five options is not a copy of
        "... clozapine?".
        """
        return self._share(self.tokens[k], toks), self._share(self.question_tokens[k], toks)

    def match(self, text: str) -> tuple[int, str, dict[str, Any]] | None:
        """(benchmark item, rule, evidence) of the first rule that fires, or None."""
        toks = content_words(text)
        hits = self.long.hits(toks)
        if hits:
            k, cov = max(((k, c / self.long.sizes[k]) for k, c in hits.items()), key=lambda kc: (kc[1], -kc[0]))
            if cov >= self.cfg.min_coverage:
                return k, "ngram", {"shared_ngrams": hits[k], "coverage": round(cov, 3), "n": self.cfg.ngram}
        short = self.short.hits(toks)
        # the best-covered candidates first: raw counts would favour long items sharing boilerplate
        ranked = sorted(short, key=lambda k: (-short[k] / self.short.sizes[k], k))
        bag = Counter(toks)
        for k in ranked[: self.cfg.max_candidates]:
            whole, question = self.contained(k, bag)
            if whole >= self.cfg.min_contained and question >= self.cfg.min_question_contained:
                return k, "contained", {"coverage": round(whole, 3), "question_coverage": round(question, 3),
                                        "n": self.cfg.candidate_ngram}
        return None


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
                self._record(item, *hit)
            else:
                kept.append(item)
        if self.cfg.embedding and kept and self.index.items:
            kept = self._embedding_pass(kept)
        return kept

    def _embedding_pass(self, items: list[Item]) -> list[Item]:
        from aloe.models.embeddings import load_embedder

        model = load_embedder()  # on the run's device, like every other model
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
