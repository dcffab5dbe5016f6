"""Accuracy with bootstrap confidence intervals, the papers' macro average, and the results table."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def bootstrap_ci(values: Sequence[float] | np.ndarray, n_boot: int = 2000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean, all resamples drawn at once."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return (float(lo), float(hi))


def summarize(predictions: Sequence[Mapping[str, Any]], seed: int = 0) -> dict[str, Any]:
    correct = np.array([bool(p["correct"]) for p in predictions], dtype=np.float64)
    out: dict[str, Any] = {"n": int(correct.size), "accuracy": float(correct.mean()) if correct.size else float("nan"),
                           "ci95": bootstrap_ci(correct, seed=seed)}
    if predictions and "correct_norm" in predictions[0]:
        norm = np.array([bool(p["correct_norm"]) for p in predictions], dtype=np.float64)
        out["acc_norm"] = float(norm.mean())
        out["acc_norm_ci95"] = bootstrap_ci(norm, seed=seed)
    if predictions and "parsed" in predictions[0]:
        out["unparsable"] = int(sum(not p["parsed"] for p in predictions))
    return out


def macro_average(per_benchmark: Mapping[str, Mapping[str, Any]], key: str = "accuracy") -> float:
    """The Aloe papers' headline figure: the unweighted mean over benchmarks."""
    vals = [m[key] for m in per_benchmark.values() if key in m]
    return float(np.mean(vals)) if vals else float("nan")


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def markdown_table(per_benchmark: Mapping[str, Mapping[str, Any]], title: str = "") -> str:
    has_norm = any("acc_norm" in m for m in per_benchmark.values())
    has_unparsable = any("unparsable" in m for m in per_benchmark.values())
    head = ["benchmark", "n", "accuracy", "95% CI"] + (["acc_norm"] if has_norm else []) + \
        (["unparsable"] if has_unparsable else [])
    lines = ([f"### {title}", ""] if title else []) + ["| " + " | ".join(head) + " |",
                                                       "|" + "---|" * len(head)]
    for name, m in per_benchmark.items():
        row = [name, str(m["n"]), _pct(m["accuracy"]), f"{_pct(m['ci95'][0])}-{_pct(m['ci95'][1])}"]
        if has_norm:
            row.append(_pct(m["acc_norm"]) if "acc_norm" in m else "")
        if has_unparsable:
            row.append(str(m.get("unparsable", "")))
        lines.append("| " + " | ".join(row) + " |")
    macro = macro_average(per_benchmark)
    lines.append("| **macro average** | " + str(sum(m["n"] for m in per_benchmark.values())) +
                 f" | **{_pct(macro)}** |" + " |" * (len(head) - 3))
    return "\n".join(lines) + "\n"
