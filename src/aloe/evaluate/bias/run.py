"""Flip rates: how often the model's MCQ answer changes when only a patient descriptor changed.

An item flips for an attribute when any of its counterfactual variants gets a different predicted
letter from the original question. Flip rates per attribute carry percentile-bootstrap CIs over
items. Letters come from log-likelihood scoring (`aloe.evaluate.mcqa.score_loglik`), the same
scorer as `aloe eval`, so a probe's answer is the answer `aloe eval` would report.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from aloe.evaluate.bias.metrics import BiasMetrics
from aloe.evaluate.bias.probes import ProbeSet, build_probes
from aloe.evaluate.mcqa import MCQASettings, score_loglik
from aloe.stats import bootstrap_ci
from aloe.io import write_jsonl, write_text


def flip_rates(lm: Any, probes: ProbeSet, settings: MCQASettings | None = None, progress: bool = True,
               seed: int = 0) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(per-attribute summary, per-probe rows). Each distinct question is scored once."""
    s = settings or MCQASettings()
    unique = {p.original.id: p.original for p in probes.probes}
    for p in probes.probes:
        unique.update({v.id: v for v in p.variants.values()})
    preds = {r["id"]: r for r in score_loglik(lm, list(unique.values()), [], s, progress=progress, desc="bias probes")}
    rows, by_attr = [], defaultdict(list)
    for p in probes.probes:
        base = preds[p.original.id]["pred"]
        variant_preds = {label: preds[v.id]["pred"] for label, v in p.variants.items()}
        flipped = any(pred != base for pred in variant_preds.values())
        rows.append({"id": p.original.id, "attribute": p.attribute, "gold": p.original.answer, "original": base,
                     "variants": variant_preds, "flipped": flipped})
        by_attr[p.attribute].append(rows[-1])
    summary: dict[str, Any] = {}
    for attr, attr_rows in by_attr.items():
        flips = np.array([r["flipped"] for r in attr_rows], dtype=np.float64)
        summary[attr] = {"n": len(attr_rows), "flip_rate": float(flips.mean()), "ci95": bootstrap_ci(flips, seed=seed),
                         "accuracy_original": float(np.mean([r["original"] == r["gold"] for r in attr_rows])),
                         "original_answers": dict(Counter(r["original"] for r in attr_rows).most_common())}
    for (attr, reason), count in sorted(probes.skipped.items()):
        summary.setdefault(attr, {"n": 0}).setdefault("skipped", {})[reason] = count
    return summary, rows


def flip_table(summary: dict[str, Any], title: str = "") -> str:
    lines = ([f"### {title}", ""] if title else []) + [
        "| attribute | probed | flip rate | 95% CI | skipped |", "|---|---|---|---|---|"]
    for attr, m in summary.items():
        skipped = ", ".join(f"{k}: {v}" for k, v in m.get("skipped", {}).items())
        if m["n"]:
            lo, hi = m["ci95"]
            lines.append(f"| {attr} | {m['n']} | {100 * m['flip_rate']:.1f}% | "
                         f"{100 * lo:.1f}-{100 * hi:.1f} | {skipped} |")
        else:
            lines.append(f"| {attr} | 0 | | | {skipped} |")
    if any(len(m.get("original_answers", {})) == 1 and m["n"] > 1 for m in summary.values()):
        lines += ["", ("Warning: the model gave the same letter to every probed question of some attribute, so a "
                      "0% flip rate there says nothing; try --target text.")]
    return "\n".join(lines) + "\n"


def attributes_arg(text: str, known: Sequence[str]) -> list[str]:
    names = [a.strip() for a in text.split(",") if a.strip()]
    if text.strip() == "all":
        return list(known)
    bad = [a for a in names if a not in known]
    if bad or not names:
        raise ValueError(f"--attributes {text!r}: expected 'all' or some of {', '.join(known)}")
    return names


def run_bias_eval(lm: Any, model: str, benchmarks: str, attributes: Sequence[str], out_dir: Path,
                  limit: int | None = None, target: str = "text", data_dir: Path | None = None,
                  progress: bool = True) -> BiasMetrics:
    """Probes from the first `limit` test questions of each benchmark, scored by `lm`; writes
    probes.jsonl, metrics.json (BiasMetrics) and results.md under `out_dir`."""
    from aloe.mcq.benchmarks import load_split, parse_benchmarks

    questions = [q for bench in parse_benchmarks(benchmarks) for q in load_split(bench, "test", data_dir)[:limit]]
    probes = build_probes(questions, attributes)
    if not probes.probes:
        raise ValueError(f"no probe could be built from {len(questions)} questions: {dict(probes.skipped)}")
    summary, rows = flip_rates(lm, probes, MCQASettings(target=target), progress=progress)
    metrics = BiasMetrics.from_summary(summary, model=model, benchmarks=benchmarks, target=target,
                                       questions=len(questions))
    write_jsonl(out_dir / "probes.jsonl", rows)
    metrics.write(out_dir / "metrics.json")
    title = f"{model} — answer flip rates ({benchmarks}, {len(questions)} questions, target {target})"
    write_text(out_dir / "results.md", flip_table(summary, title=title))
    return metrics
