"""Evaluate one model on several benchmarks: load once, score each, write results as they finish.

Per benchmark: `predictions.jsonl`, then `metrics.json` last, which doubles as the completion
marker. A rerun with the same model, data and settings reuses finished benchmarks; generated
answers are cached, so a run killed midway pays again only for the batch it was in.
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

from aloe.evaluate.benchmarks import Benchmark, load_split
from aloe.evaluate.mcqa import MCQASettings, score_generate, score_loglik
from aloe.evaluate.metrics import macro_average, markdown_table, summarize
from aloe.io import read_json, write_json, write_jsonl, write_text
from aloe.models.loading import weights_fingerprint
from aloe.models.spec import parse_model_spec
from aloe.records import MCQ

log = logging.getLogger(__name__)


@dataclass
class EvalRequest:
    model: str
    benchmarks: Sequence[Benchmark]
    settings: MCQASettings
    out_dir: Path
    limit: int | None = None
    data_dir: Path | None = None
    source: str = "local"
    batch_size: int = 8
    dtype: str = "float32"
    progress: bool = True
    holder: ModelHolder | None = None  # an already loaded model to reuse (the recipe runner's)


def _questions_fingerprint(qs: Sequence[MCQ]) -> str:
    h = hashlib.sha256()
    for q in qs:
        h.update(json.dumps(q.to_dict(), sort_keys=True).encode())
    return h.hexdigest()[:16]


class ModelHolder:
    """Loads the model on first use only, so a fully cached rerun loads nothing."""

    def __init__(self, model: str, dtype: str = "float32", batch_size: int = 8):
        self.model, self.dtype, self.batch_size = model, dtype, batch_size
        self._lm: Any = None
        self._gen: Any = None

    @property
    def lm(self) -> Any:
        if self._lm is None:
            from aloe.models.hf import HFCausalLM

            self._lm = HFCausalLM.from_spec(self.model, dtype=self.dtype, batch_size=self.batch_size)
        return self._lm

    def generator(self, cache_dir: Path) -> Any:
        if self._gen is None:
            from aloe.models.completion_cache import CachedGenerator
            from aloe.models.generator import HFGenerator, get_generator

            if parse_model_spec(self.model).kind in ("openai", "vllm"):
                self._gen = get_generator(self.model, cache_dir=str(cache_dir))
            else:
                self._gen = CachedGenerator(HFGenerator(self.lm, self.model), cache_dir,
                                            identity=weights_fingerprint(self.model))
        return self._gen


def run_eval(req: EvalRequest) -> dict[str, Any]:
    s = req.settings
    if s.mode == "loglik" and parse_model_spec(req.model).kind in ("openai", "vllm"):
        raise ValueError(f"{req.model}: log-likelihood scoring needs the weights in-process; use --mode generate")
    holder = req.holder or ModelHolder(req.model, req.dtype, req.batch_size)
    model_fp = weights_fingerprint(req.model)
    per_bench: dict[str, dict[str, Any]] = {}
    t_start = time.time()
    for bench in req.benchmarks:
        questions = load_split(bench, "test", req.data_dir, req.source)
        if req.limit is not None:
            questions = questions[:req.limit]
        if not questions:  # scored, 0 questions would write a nan accuracy that reads as a result
            raise ValueError(f"{bench.name}: no questions to evaluate in the {req.source} test split")
        pool = load_split(bench, "fewshot", req.data_dir) if s.shots else []
        fingerprint = hashlib.sha256(json.dumps(
            [model_fp, s.describe(), _questions_fingerprint(questions), _questions_fingerprint(pool)]
        ).encode()).hexdigest()[:16]
        bdir = req.out_dir / bench.name
        done = bdir / "metrics.json"
        if done.is_file() and read_json(done).get("fingerprint") == fingerprint:
            per_bench[bench.name] = read_json(done)
            log.warning("%s: reusing finished results in %s", bench.name, bdir)
            continue
        t0 = time.time()
        if s.mode == "loglik" and s.chat and not holder.lm.has_chat_template:
            raise ValueError(f"{req.model} has no chat template: evaluate without --chat-template on")
        if s.mode == "loglik":
            preds = score_loglik(holder.lm, questions, pool, s, progress=req.progress, desc=bench.name)
        else:
            preds = score_generate(holder.generator(req.out_dir / "cache"), questions, pool, s)
        metrics = summarize(preds) | {"benchmark": bench.name, "title": bench.title, "model": req.model,
                                      "settings": s.describe(), "fingerprint": fingerprint,
                                      "seconds": round(time.time() - t0, 2)}
        if bench.note:
            metrics["note"] = bench.note
        write_jsonl(bdir / "predictions.jsonl", preds)
        write_json(done, metrics)
        per_bench[bench.name] = metrics
    summary = {"model": req.model, "settings": s.describe(), "limit": req.limit,
               "macro_accuracy": macro_average(per_bench), "benchmarks": per_bench,
               "seconds": round(time.time() - t_start, 2)}
    write_json(req.out_dir / "metrics.json", summary)
    write_text(req.out_dir / "results.md", markdown_table(
        per_bench, title=f"{req.model}: " + ", ".join(f"{k}={v}" for k, v in s.describe().items())))
    return summary
