"""`aloe eval --strategy`: inference strategies on benchmarks, with deltas to zero-shot.

Per benchmark and strategy: `<bench>/<strategy>.jsonl` (one prediction row per question), then
`<bench>/<strategy>.metrics.json`, which doubles as the completion marker: it carries a fingerprint
of the model weights, the strategy's knobs and the questions, and a rerun with the same
fingerprint reads the predictions back without loading the model. Every completion also goes
through the on-disk completion cache (`out_dir/cache`), so a run killed midway pays again only for
the rows that were still decoding. Zero-shot always runs first: it is the baseline of every delta.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aloe.mcq.benchmarks import Benchmark, load_split
from aloe.mcq.benchmarks import questions_fingerprint
from aloe.models.holder import ModelHolder
from aloe.models.loading import weights_fingerprint
from aloe.infer.config import InferConfig
from aloe.infer.metrics import StrategyEvalMetrics, StrategyMetrics, StrategyRunMetrics
from aloe.infer.runner import markdown_table, run_strategy, summarize
from aloe.infer.strategies import STRATEGIES, Strategy, build_strategy
from aloe.io import iter_jsonl, require_file, write_text
from aloe.models.generator import Generator

log = logging.getLogger(__name__)

BASELINE = "zero-shot"


@dataclass
class StrategyEvalRequest:
    model: str
    benchmarks: Sequence[Benchmark]
    strategies: Sequence[str]          # zero-shot is always added as the baseline for deltas
    config: InferConfig
    out_dir: Path
    limit: int | None = None
    data_dir: Path | None = None
    batch_size: int = 8
    progress: bool = True
    generator: Generator | None = None  # reuse an already loaded model (no repeated loads)
    cache_dir: Path | None = None       # the completion cache; default out_dir/cache


def parse_strategies(names: str | Sequence[str]) -> list[str]:
    """Validated strategy names, baseline first; a string may be a comma list or 'all'."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    if list(names) == ["all"]:
        names = list(STRATEGIES)
    unknown = [n for n in names if n not in STRATEGIES]
    if unknown:
        raise ValueError(f"unknown strategy {unknown[0]!r}; known: {', '.join(STRATEGIES)} (or 'all')")
    return [BASELINE, *dict.fromkeys(n for n in names if n != BASELINE)]


def _fingerprint(model_fp: str, strategy: Strategy, questions_fp: str, pool_fp: str) -> str:
    knobs = strategy.config.model_dump(mode="json", exclude={"index_dir"})
    parts: list[Any] = [model_fp, strategy.name, knobs, questions_fp, pool_fp if strategy.uses_pool else ""]
    if strategy.preset.rag:
        corpus = strategy.config.rag.corpus.stat()
        parts.append([corpus.st_size, int(corpus.st_mtime)])
    if strategy.uses_pool and strategy.config.cot_db is not None:
        # a database rebuilt under the same path (another model, more attempts) is another evaluation
        db = require_file(strategy.config.cot_db, "CoT database").stat()
        parts.append([db.st_size, db.st_mtime_ns])
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


class _LazyGenerator:
    """The caller's generator, or the model loaded on first use; either behind the completion cache."""

    def __init__(self, req: StrategyEvalRequest):
        self.req = req
        self._gen: Generator | None = None

    def get(self) -> Generator:
        if self._gen is None:
            from aloe.models.completion_cache import CachedGenerator

            cache_dir = self.req.cache_dir or self.req.out_dir / "cache"
            if self.req.generator is None:
                self._gen = ModelHolder(self.req.model, batch_size=self.req.batch_size).generator(cache_dir)
            elif isinstance(self.req.generator, CachedGenerator):
                self._gen = self.req.generator
            else:
                self._gen = CachedGenerator(self.req.generator, cache_dir, identity=weights_fingerprint(self.req.model))
        return self._gen


def run_strategy_eval(req: StrategyEvalRequest) -> dict[str, Any]:
    """Writes the run's metrics.json through StrategyEvalMetrics; returns it as the file's mapping."""
    names = parse_strategies(req.strategies)
    if req.limit is not None and req.limit < 1:
        raise ValueError("limit must be at least 1")
    model_fp = weights_fingerprint(req.model)
    generator = _LazyGenerator(req)
    per_bench: dict[str, dict[str, StrategyMetrics]] = {}
    table: dict[tuple[str, str], dict[str, Any]] = {}
    t_start = time.time()
    for bench in req.benchmarks:
        questions = load_split(bench, "test", req.data_dir)[:req.limit]
        pool = load_split(bench, "fewshot", req.data_dir) if bench.fewshot else []
        q_fp, pool_fp = questions_fingerprint(questions), questions_fingerprint(pool)
        bdir = req.out_dir / bench.name
        baseline: list[dict[str, Any]] | None = None
        for name in names:
            strategy = build_strategy(name, req.config)
            if strategy.uses_pool and not pool:
                raise ValueError(f"strategy {name} needs a few-shot pool and {bench.name} has none")
            fingerprint = _fingerprint(model_fp, strategy, q_fp, pool_fp)
            preds, marker = bdir / f"{name}.jsonl", bdir / f"{name}.metrics.json"
            t0 = time.time()
            # reused only with its predictions still there
            if preds.is_file() and (finished := StrategyRunMetrics.read_finished(marker, fingerprint)) is not None:
                log.warning("%s/%s: reusing finished predictions in %s", bench.name, name, preds)
                rows = [row for _, row in iter_jsonl(preds)]
                seconds = finished.seconds
            else:
                if req.progress:
                    print(f"{bench.name}: {name} on {len(questions)} questions", flush=True)
                rows = run_strategy(strategy, generator.get(), questions, pool, preds, progress=req.progress)
                seconds = round(time.time() - t0, 2)
            metrics = summarize(rows, baseline if name != BASELINE else None, seed=req.config.seed)
            StrategyRunMetrics.model_validate(metrics | {"benchmark": bench.name, "strategy": name, "model": req.model,
                                                         "fingerprint": fingerprint, "seconds": seconds}).write(marker)
            per_bench.setdefault(bench.name, {})[name] = StrategyMetrics.model_validate(metrics)
            table[(bench.name, name)] = metrics
            baseline = baseline or rows
    macro = {n: sum(per_bench[b][n].accuracy for b in per_bench) / len(per_bench) for n in names}
    typed = StrategyEvalMetrics(model=req.model, strategies=names, limit=req.limit,
                                config=req.config.model_dump(mode="json"), benchmarks=per_bench, macro=macro,
                                seconds=round(time.time() - t_start, 2))
    typed.write(req.out_dir / "metrics.json")
    macro_line = ", ".join(f"{n} {100 * a:.1f}" for n, a in macro.items())
    write_text(req.out_dir / "results.md", f"{req.model}: strategies vs zero-shot\n\n{markdown_table(table)}\n"
                                           f"macro accuracy: {macro_line}\n")
    return typed.model_dump(mode="json", exclude_unset=True)
