"""`aloe eval-open`: free-text answers, judged and compared with references, per specialty.

Per set: the model answers every question (completions cached), then the reference-based figures
(ROUGE-L, embedding similarity, relaxed perplexity when the weights are in-process), then the judge
(cached), and `metrics.json` last as the completion marker. A rerun with the same model, judge,
data and settings reuses finished sets; a run killed midway pays again only for unfinished batches.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aloe.stats import bootstrap_ci
from aloe.evaluate.openended.datasets import OpenQA, load_open_set
from aloe.evaluate.openended.judge import judge_answers
from aloe.evaluate.openended.metrics import OpenEndedMetrics, OpenSetMetrics, OpenSummary
from aloe.evaluate.openended.perplexity import INSTRUCTION, relaxed_perplexity
from aloe.evaluate.openended.reference import embedding_similarity, rouge_l
from aloe.evaluate.openended.specialty import keyword_specialty, model_specialties
from aloe.models.holder import ModelHolder
from aloe.models.loading import weights_fingerprint
from aloe.models.precision import active_policy
from aloe.io import write_jsonl, write_text
from aloe.models.generator import GenParams
from aloe.models.backends import get_generator
from aloe.models.spec import parse_model_spec

# Figures averaged per set and per specialty; judge accuracy is handled apart (it has unparsables).
MEAN_FIELDS = ("rouge_l", "embedding_similarity", "perplexity", "relaxed_perplexity")


@dataclass
class OpenEvalRequest:
    model: str
    sets: Sequence[str]
    out_dir: Path
    judge: str | None = None
    specialty_model: str | None = None
    limit: int | None = None
    data_dir: Path | None = None
    max_new_tokens: int = 128
    judge_max_new_tokens: int = 256
    perplexity: bool = True
    batch_size: int = 8
    dtype: str | None = None  # None: the active policy's generation precision
    progress: bool = True
    seed: int = 0
    holder: ModelHolder | None = None  # an already loaded model to reuse (the recipe runner's)
    cache_dir: Path | None = None  # completion cache; None: out_dir/cache


def _summ(values: Sequence[float], seed: int) -> dict[str, Any]:
    x = [v for v in values if v is not None and not math.isnan(v)]
    if not x:
        return {"n": 0}
    return {"n": len(x), "mean": float(np.mean(x)), "ci95": bootstrap_ci(x, seed=seed)}


def summarize_open(rows: Sequence[dict[str, Any]], seed: int = 0) -> dict[str, Any]:
    out: dict[str, Any] = {"n": len(rows)}
    for f in MEAN_FIELDS:
        if any(f in r for r in rows):
            out[f] = _summ([r[f] for r in rows if f in r], seed)
    if any("verdict" in r for r in rows):
        verdicts = [r["verdict"] for r in rows if "verdict" in r]
        parsed = [float(v) for v in verdicts if v is not None]
        out["judge_accuracy"] = _summ(parsed, seed) | {"unparsable": len(verdicts) - len(parsed)}
    return out


def _fingerprint(req: OpenEvalRequest, items: Sequence[OpenQA], dtype: str) -> str:
    h = hashlib.sha256(json.dumps([weights_fingerprint(req.model), dtype, req.judge, req.specialty_model,
                                   req.max_new_tokens, req.judge_max_new_tokens, req.perplexity, req.seed]).encode())
    for it in items:
        h.update(json.dumps(asdict(it), sort_keys=True).encode())
    return h.hexdigest()[:16]


def answer_messages(question: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"{INSTRUCTION}\n\n{question}"}]


def evaluate_set(req: OpenEvalRequest, items: list[OpenQA], holder: ModelHolder, cache: Path) -> list[dict[str, Any]]:
    questions = [it.question for it in items]
    if req.specialty_model:
        specialties = model_specialties(get_generator(req.specialty_model, cache_dir=str(cache)), questions)
    else:
        specialties = [it.specialty or keyword_specialty(it.question) for it in items]
    gen = holder.generator(cache)
    answers = gen.chat([answer_messages(q) for q in questions],
                       GenParams(max_new_tokens=req.max_new_tokens, temperature=0.0, seed=req.seed))
    rows = [{"id": it.id, "source": it.source, "specialty": sp, "question": it.question, "reference": it.reference,
             "answer": a} for it, sp, a in zip(items, specialties, answers, strict=True)]
    with_ref = [i for i, it in enumerate(items) if it.reference is not None]
    refs = [items[i].reference or "" for i in with_ref]
    preds = [answers[i] for i in with_ref]
    for i, rl, es in zip(with_ref, rouge_l(preds, refs), embedding_similarity(preds, refs), strict=True):
        rows[i].update(rouge_l=rl, embedding_similarity=es)
    in_process = parse_model_spec(req.model).kind not in ("openai", "vllm")
    if req.perplexity and in_process and with_ref:
        ppl = relaxed_perplexity(holder.lm, items, own_answers={it.id: a for it, a in zip(items, answers, strict=True)},
                                 progress=req.progress)
        for row in rows:
            if row["id"] in ppl:
                row.update(ppl[row["id"]])
    if req.judge:
        judged = judge_answers(get_generator(req.judge, cache_dir=str(cache)), questions, answers,
                               [it.reference for it in items], max_new_tokens=req.judge_max_new_tokens)
        for row, j in zip(rows, judged, strict=True):
            row.update(j)
    return rows


def run_open_eval(req: OpenEvalRequest) -> dict[str, Any]:
    """Writes the run's metrics.json through OpenEndedMetrics; returns it as the file's mapping."""
    holder = req.holder or ModelHolder(req.model, req.dtype or active_policy().generate_dtype, req.batch_size)
    cache = req.cache_dir or req.out_dir / "cache"
    per_set: dict[str, OpenSetMetrics] = {}
    all_rows: list[dict[str, Any]] = []
    for name in req.sets:
        items = load_open_set(name, req.data_dir, req.limit)
        set_name = Path(name.removeprefix("jsonl:")).stem if name.startswith("jsonl:") else name
        sdir = req.out_dir / set_name
        done = sdir / "metrics.json"
        fingerprint = _fingerprint(req, items, holder.dtype)
        if (finished := OpenSetMetrics.read_finished(done, fingerprint)) is not None:
            per_set[set_name] = finished
            all_rows += [json.loads(line) for line in (sdir / "predictions.jsonl").read_text().splitlines()]
            continue
        t0 = time.time()
        rows = evaluate_set(req, items, holder, cache)
        metrics = OpenSetMetrics.model_validate(
            summarize_open(rows, req.seed) | {"set": set_name, "model": req.model, "judge": req.judge,
                                              "fingerprint": fingerprint, "seconds": round(time.time() - t0, 2)})
        write_jsonl(sdir / "predictions.jsonl", rows)
        metrics.write(done)
        per_set[set_name] = metrics
        all_rows += rows
    by_specialty: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in all_rows:
        by_specialty[r["specialty"]].append(r)
    typed = OpenEndedMetrics(
        model=req.model, judge=req.judge, limit=req.limit, sets=per_set,
        overall=OpenSummary.model_validate(summarize_open(all_rows, req.seed)),
        specialties={k: OpenSummary.model_validate(summarize_open(v, req.seed)) for k, v in sorted(by_specialty.items())})
    typed.write(req.out_dir / "metrics.json")
    # results_markdown reads the optional figures by their presence, as the file has them
    summary = typed.model_dump(mode="json", exclude_unset=True)
    write_text(req.out_dir / "results.md", results_markdown(summary))
    return summary


def _cell(m: dict[str, Any], key: str, fmt: str = "{:.3f}") -> str:
    s = m.get(key)
    if not s:
        return ""
    text = "-"
    if s.get("n"):
        lo, hi = s["ci95"]
        text = f"{fmt.format(s['mean'])} ({fmt.format(lo)}-{fmt.format(hi)})"
        # Reference figures skip questions without a reference: say over how many the mean is.
        if s["n"] < m["n"] and not s.get("unparsable"):
            text += f" [n={s['n']}]"
    return text + (f" [{s['unparsable']} unparsable]" if s.get("unparsable") else "")


def _table(title: str, rows: dict[str, dict[str, Any]]) -> list[str]:
    head = ["", "n", "judge accuracy", "ROUGE-L", "embedding sim.", "perplexity", "relaxed perplexity"]
    lines = [f"### {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, m in rows.items():
        lines.append("| " + " | ".join([name, str(m["n"]), _cell(m, "judge_accuracy"), _cell(m, "rouge_l"),
                                        _cell(m, "embedding_similarity"), _cell(m, "perplexity", "{:.2f}"),
                                        _cell(m, "relaxed_perplexity", "{:.2f}")]) + " |")
    return lines + [""]


def results_markdown(summary: dict[str, Any]) -> str:
    title = f"{summary['model']} (judge: {summary['judge'] or 'none'}); mean (95% bootstrap CI)"
    return "\n".join(_table(title, summary["sets"]) + _table("per specialty", summary["specialties"]))
