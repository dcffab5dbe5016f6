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

from aloe.mcq.benchmarks import Benchmark, load_split, questions_fingerprint
from aloe.evaluate.mcqa import MCQASettings, score_generate, score_loglik
from aloe.evaluate.metrics import BenchmarkMetrics, EvalMetrics
from aloe.stats import macro_average, markdown_table, summarize
from aloe.io import write_jsonl, write_text
from aloe.models.holder import ModelHolder
from aloe.models.loading import weights_fingerprint
from aloe.models.precision import active_policy
from aloe.models.spec import parse_model_spec

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
    dtype: str | None = None  # None: the active policy's, for scoring or generation as the mode asks
    progress: bool = True
    holder: ModelHolder | None = None  # an already loaded model to reuse (the recipe runner's)


def run_eval(req: EvalRequest) -> dict[str, Any]:
    s = req.settings
    if s.mode == "loglik" and parse_model_spec(req.model).kind in ("openai", "vllm"):
        raise ValueError(f"{req.model}: log-likelihood scoring needs the weights in-process; use --mode generate")
    policy = active_policy()
    dtype = req.dtype or (policy.score_dtype if s.mode == "loglik" else policy.generate_dtype)
    holder = req.holder or ModelHolder(req.model, dtype, req.batch_size)
    model_fp = weights_fingerprint(req.model)
    per_bench: dict[str, BenchmarkMetrics] = {}
    t_start = time.time()
    for bench in req.benchmarks:
        questions = load_split(bench, "test", req.data_dir, req.source)
        if req.limit is not None:
            questions = questions[:req.limit]
        if not questions:  # scored, 0 questions would write a nan accuracy that reads as a result
            raise ValueError(f"{bench.name}: no questions to evaluate in the {req.source} test split")
        pool = load_split(bench, "fewshot", req.data_dir) if s.shots else []
        fingerprint = hashlib.sha256(json.dumps(
            [model_fp, s.describe(), questions_fingerprint(questions), questions_fingerprint(pool), holder.dtype]
        ).encode()).hexdigest()[:16]
        bdir = req.out_dir / bench.name
        done = bdir / "metrics.json"
        if prev := BenchmarkMetrics.read_finished(done, fingerprint):
            per_bench[bench.name] = prev
            log.warning("%s: reusing finished results in %s", bench.name, bdir)
            continue
        t0 = time.time()
        if s.mode == "loglik" and s.chat and not holder.lm.has_chat_template:
            raise ValueError(f"{req.model} has no chat template: evaluate without --chat-template on")
        if s.mode == "loglik":
            preds = score_loglik(holder.lm, questions, pool, s, progress=req.progress, desc=bench.name)
        else:
            preds = score_generate(holder.generator(req.out_dir / "cache"), questions, pool, s)
        metrics = BenchmarkMetrics.model_validate(
            summarize(preds) | {"benchmark": bench.name, "title": bench.title, "model": req.model,
                                "settings": s.describe(), "fingerprint": fingerprint,
                                "seconds": round(time.time() - t0, 2)} | ({"note": bench.note} if bench.note else {}))
        write_jsonl(bdir / "predictions.jsonl", preds)
        metrics.write(done)
        per_bench[bench.name] = metrics
    # aloe.stats reads a result's optional figures (acc_norm, unparsable) by their presence
    rows = {name: m.model_dump(exclude_unset=True) for name, m in per_bench.items()}
    summary = EvalMetrics(model=req.model, settings=s.describe(), limit=req.limit, macro_accuracy=macro_average(rows),
                          benchmarks=per_bench, seconds=round(time.time() - t_start, 2))
    summary.write(req.out_dir / "metrics.json")
    write_text(req.out_dir / "results.md", markdown_table(
        rows, title=f"{req.model}: " + ", ".join(f"{k}={v}" for k, v in s.describe().items())))
    return summary.model_dump(mode="json", exclude_unset=True)
