"""Win rates with bootstrap CIs, head-to-head tables, flags, and a Bradley-Terry ranking.

A model's win rate counts a win as 1, a tie as 1/2 and a loss as 0 over every vote it took part in.
Bradley-Terry strengths are fitted by Hunter's (2004) MM updates with each tie split as half a win
for each side, plus one pseudo-tie per pair so a model that never lost still gets a finite strength;
strengths are reported normalised to sum to one.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from itertools import combinations
from typing import Any

import numpy as np

from aloe.stats import bootstrap_ci


def _outcomes(votes: Sequence[dict[str, Any]]) -> dict[str, list[float]]:
    per_model: dict[str, list[float]] = defaultdict(list)
    for v in votes:
        for m in (v["model_a"], v["model_b"]):
            per_model[m].append(0.5 if v["winner"] is None else float(v["winner"] == m))
    return per_model


def win_rates(votes: Sequence[dict[str, Any]], seed: int = 0) -> dict[str, dict[str, Any]]:
    out = {}
    for model, scores in sorted(_outcomes(votes).items()):
        wins = sum(s == 1.0 for s in scores)
        ties = sum(s == 0.5 for s in scores)
        out[model] = {"n": len(scores), "wins": wins, "ties": ties, "losses": len(scores) - wins - ties,
                      "win_rate": float(np.mean(scores)), "ci95": bootstrap_ci(scores, seed=seed)}
    return out


def head_to_head(votes: Sequence[dict[str, Any]]) -> dict[tuple[str, str], dict[str, int]]:
    """(x, y) with x < y -> {x wins, y wins, ties}."""
    table: dict[tuple[str, str], dict[str, int]] = {}
    for v in votes:
        x, y = sorted((v["model_a"], v["model_b"]))
        cell = table.setdefault((x, y), {x: 0, y: 0, "tie": 0})
        cell[v["winner"] if v["winner"] is not None else "tie"] += 1
    return table


def bradley_terry(votes: Sequence[dict[str, Any]], iters: int = 1000, tol: float = 1e-10) -> dict[str, float]:
    models = sorted({m for v in votes for m in (v["model_a"], v["model_b"])})
    idx = {m: i for i, m in enumerate(models)}
    k = len(models)
    wins = np.zeros((k, k))  # wins[i, j]: times i beat j (ties count half each way)
    for v in votes:
        a, b = idx[v["model_a"]], idx[v["model_b"]]
        if v["winner"] is None:
            wins[a, b] += 0.5
            wins[b, a] += 0.5
        else:
            w = idx[v["winner"]]
            wins[w, b if w == a else a] += 1
    for i, j in combinations(range(k), 2):  # the regularising pseudo-tie
        wins[i, j] += 0.5
        wins[j, i] += 0.5
    games = wins + wins.T
    p = np.ones(k) / k
    for _ in range(iters):
        denom = (games / (p[:, None] + p[None, :])).sum(axis=1)
        new = wins.sum(axis=1) / denom
        new /= new.sum()
        if np.abs(new - p).max() < tol:
            p = new
            break
        p = new
    return dict(sorted(zip(models, map(float, p), strict=True), key=lambda kv: -kv[1]))


def flag_counts(votes: Sequence[dict[str, Any]]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for v in votes:
        for model, flags in v["flags"].items():
            for f in flags:
                out[model][f] += 1
    return {m: dict(c) for m, c in sorted(out.items())}


def summarize_votes(votes: Sequence[dict[str, Any]], seed: int = 0) -> dict[str, Any]:
    rates = win_rates(votes, seed)
    out: dict[str, Any] = {"votes": len(votes), "raters": len({v["rater"] for v in votes}), "win_rates": rates,
                           "head_to_head": {f"{x} vs {y}": c for (x, y), c in head_to_head(votes).items()},
                           "flags": flag_counts(votes)}
    if len(rates) > 2:
        out["bradley_terry"] = bradley_terry(votes)
    return out


def results_text(summary: dict[str, Any]) -> str:
    lines = [f"{summary['votes']} votes from {summary['raters']} rater(s)", "",
             "| model | comparisons | wins | ties | losses | win rate | 95% CI | flags |", "|---" * 8 + "|"]
    for m, r in summary["win_rates"].items():
        flags = ", ".join(f"{k}: {v}" for k, v in summary["flags"].get(m, {}).items())
        lo, hi = r["ci95"]
        lines.append(f"| {m} | {r['n']} | {r['wins']} | {r['ties']} | {r['losses']} | {100 * r['win_rate']:.1f}% | "
                     f"{100 * lo:.1f}-{100 * hi:.1f} | {flags} |")
    lines += ["", "head to head:"] + [f"- {k}: " + ", ".join(f"{m} {n}" for m, n in c.items())
                                      for k, c in summary["head_to_head"].items()]
    if "bradley_terry" in summary:
        lines += ["", "Bradley-Terry ranking (strengths sum to 1):"]
        lines += [f"{i}. {m}  {s:.3f}" for i, (m, s) in enumerate(summary["bradley_terry"].items(), 1)]
    return "\n".join(lines) + "\n"
