"""Running strategies over a benchmark: predictions, accuracy with CIs, deltas to zero-shot."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from aloe.stats import bootstrap_ci
from aloe.infer.strategies import Strategy
from aloe.io import write_jsonl
from aloe.models.generator import Generator
from aloe.records import MCQ


def run_strategy(strategy: Strategy, generator: Generator, questions: Sequence[MCQ], pool: Sequence[MCQ],
                 out: Path | None = None, progress: bool = True) -> list[dict[str, Any]]:
    """One prediction row per question (gold, pred, correct, votes, ...), also written to `out`."""
    results = strategy.predict(generator, questions, pool, progress=progress)
    rows = [{**r.to_dict(), "gold": q.answer, "pred": r.letter, "parsed": r.letter is not None,
             "correct": r.letter == q.answer} for q, r in zip(questions, results, strict=True)]
    if out is not None:
        write_jsonl(out, rows)
    return rows


def summarize(rows: Sequence[dict[str, Any]], baseline: Sequence[dict[str, Any]] | None = None,
              seed: int = 0) -> dict[str, Any]:
    """Accuracy with a bootstrap CI; with a baseline on the same questions, the paired delta and its CI."""
    correct = np.array([r["correct"] for r in rows], dtype=np.float64)
    out: dict[str, Any] = {"n": len(rows), "accuracy": float(correct.mean()) if len(rows) else float("nan"),
                           "ci95": bootstrap_ci(correct, seed=seed),
                           "unparsable": int(sum(not r["parsed"] for r in rows)),
                           "samples": int(sum(len(r["responses"]) for r in rows)),
                           "retries": int(sum(len(s) - 1 for r in rows for s in r["responses"]))}
    if baseline is not None:
        if [r["id"] for r in rows] != [b["id"] for b in baseline]:
            raise ValueError("delta to baseline: the two runs are on different questions")
        diff = correct - np.array([b["correct"] for b in baseline], dtype=np.float64)
        out["delta"] = float(diff.mean())
        out["delta_ci95"] = bootstrap_ci(diff, seed=seed)
    return out


def markdown_table(per_run: dict[tuple[str, str], dict[str, Any]]) -> str:
    """Rows keyed by (benchmark, strategy)."""
    def pct(x: float) -> str:
        return f"{100 * x:.1f}"

    lines = ["| benchmark | strategy | n | accuracy | 95% CI | delta vs zero-shot | 95% CI | unparsable | samples (retries) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for (bench, name), m in per_run.items():
        lo, hi = m["ci95"]
        delta = (f"{100 * m['delta']:+.1f} | {100 * m['delta_ci95'][0]:+.1f} to {100 * m['delta_ci95'][1]:+.1f}"
                 if "delta" in m else " | ")
        lines.append(f"| {bench} | {name} | {m['n']} | {pct(m['accuracy'])} | {pct(lo)}-{pct(hi)} | {delta} | "
                     f"{m['unparsable']} | {m['samples']} ({m['retries']}) |")
    return "\n".join(lines) + "\n"
