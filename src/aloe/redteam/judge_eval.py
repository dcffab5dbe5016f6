"""How far a safety judge agrees with human labels: `aloe redteam judge-eval`.

For each label file and subset: agreement with the human label, precision / recall / F1 for
"unsafe", false-positive and false-negative rates and Cohen's kappa, each with a percentile-bootstrap
95% interval (all resamples computed at once), and the count of undecided verdicts (metrics are over
decided pairs; `agreement_all` counts an undecided verdict as a disagreement). The published judges'
verdicts that a file carries (JailbreakBench: HarmBench classifier, GPT-4, Llama Guard 2,
Llama-3-70B) are measured the same way on the same pairs, for reference.

A judge that was fit on labelled pairs names them (`fit_keys`) and the requests it saw
(`fit_requests`); a pair the judge was fit on, or whose request it was fit on, is never scored, and
the count left out is reported, so no figure here is a training-set figure.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

from aloe.io import read_json, write_json, write_jsonl, write_text
from aloe.redteam.judge_labels import PACKAGED, LabelledPair, request_key
from aloe.safety.verdicts import Judge

METRICS = ("agreement", "precision", "recall", "f1", "fpr", "fnr", "kappa")
# Measured agreement of the judges aloe ships, as recorded by `judge-eval --record`.
REGISTRY = PACKAGED / "judge_agreement.json"
REFERENCE_NAMES = {"harmbench_cf": "HarmBench classifier (published)", "gpt4_cf": "GPT-4 (published)",
                   "llamaguard2_cf": "Llama Guard 2 (published)", "llama3_cf": "Llama-3-70B (published)"}


def _rates(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, tn: np.ndarray) -> dict[str, np.ndarray]:
    """Every metric from confusion counts; arrays so one call serves the point estimate and all resamples."""
    n = tp + fp + fn + tn
    with np.errstate(divide="ignore", invalid="ignore"):
        agree = (tp + tn) / n
        prec = tp / (tp + fp)
        rec = tp / (tp + fn)
        f1 = 2 * tp / (2 * tp + fp + fn)
        fpr = fp / (fp + tn)
        fnr = fn / (tp + fn)
        p_yes = ((tp + fp) / n) * ((tp + fn) / n) + ((fn + tn) / n) * ((fp + tn) / n)
        kappa = np.where(p_yes < 1, (agree - p_yes) / (1 - p_yes), 1.0)
    return dict(zip(METRICS, (agree, prec, rec, f1, fpr, fnr, kappa), strict=True))


def binary_metrics(human: Sequence[bool], judged: Sequence[bool | None], n_boot: int = 2000,
                   seed: int = 0) -> dict[str, Any]:
    """Agreement metrics of verdicts (None: undecided) with human labels, "unsafe" the positive class."""
    if len(human) != len(judged):
        raise ValueError(f"{len(human)} labels but {len(judged)} verdicts")
    decided = [i for i, v in enumerate(judged) if v is not None]
    y = np.array([human[i] for i in decided], dtype=bool)
    p = np.array([judged[i] for i in decided], dtype=bool)
    out: dict[str, Any] = {"n": len(human), "decided": len(decided), "undecided": len(human) - len(decided),
                           "human_unsafe": int(sum(human)), "judged_unsafe": int(p.sum())}
    if not decided:
        return out | {m: None for m in METRICS}
    cells = [(y & p), (~y & p), (y & ~p), (~y & ~p)]
    out.update({k: int(c.sum()) for k, c in zip(("tp", "fp", "fn", "tn"), cells, strict=True)})
    point = _rates(*(np.array(c.sum(), dtype=float) for c in cells))
    idx = np.random.default_rng(seed).integers(0, y.size, size=(n_boot, y.size))
    boot = _rates(*(c[idx].sum(axis=1).astype(float) for c in cells))
    for m in METRICS:
        v = float(point[m])
        out[m] = None if np.isnan(v) else v
        b = boot[m][~np.isnan(boot[m])]
        out[f"{m}_ci95"] = [float(x) for x in np.percentile(b, [2.5, 97.5])] if b.size and out[m] is not None else None
    out["agreement_all"] = int((y == p).sum()) / len(human)
    return out


def _grouped(pairs: Sequence[LabelledPair], verdicts: Sequence[bool | None], seed: int) -> dict[str, Any]:
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(pairs):
        groups.setdefault(p.subset_group, []).append(i)
    return {g: binary_metrics([pairs[i].unsafe for i in ix], [verdicts[i] for i in ix], seed=seed)
            for g, ix in sorted(groups.items())}


def evaluate_judge(judge: Judge, files: Mapping[str, Sequence[LabelledPair]], out_dir: str | Path | None = None,
                   seed: int = 0) -> dict[str, Any]:
    """Run the judge on every pair it was not fit on; metrics per file and subset (and the references)."""
    fit = frozenset(getattr(judge, "fit_keys", frozenset()))
    fit_requests = frozenset(getattr(judge, "fit_requests", frozenset()))
    result: dict[str, Any] = {"judge": judge.name, "fit_on": getattr(judge, "fit_description", None),
                              "date": date.today().isoformat(), "files": {}}
    verdict_rows: list[dict[str, Any]] = []
    for stem, all_pairs in files.items():
        pairs = [p for p in all_pairs if p.key not in fit and request_key(p.behavior) not in fit_requests]
        entry: dict[str, Any] = {"pairs": len(all_pairs), "excluded_fit": len(all_pairs) - len(pairs)}
        if pairs:
            verdicts = judge.judge_many([p.behavior for p in pairs], [p.response for p in pairs])
            unsafe = [v.unsafe for v in verdicts]
            entry["overall"] = binary_metrics([p.unsafe for p in pairs], unsafe, seed=seed)
            entry["by_subset"] = _grouped(pairs, unsafe, seed)
            refs = sorted({k for p in pairs for k, _ in p.reference})
            entry["reference"] = {REFERENCE_NAMES.get(k, k): binary_metrics(
                [p.unsafe for p in pairs], [dict(p.reference).get(k) for p in pairs], seed=seed) for k in refs}
            verdict_rows += [{"id": p.id, "file": stem, "human": "unsafe" if p.unsafe else "safe",
                              "judged": None if v.unsafe is None else ("unsafe" if v.unsafe else "safe"),
                              "score": v.score, "reason": v.reason} for p, v in zip(pairs, verdicts, strict=True)]
        result["files"][stem] = entry
    if out_dir is not None:
        out = Path(out_dir)
        write_json(out / "metrics.json", result)
        write_jsonl(out / "verdicts.jsonl", verdict_rows)  # ids and verdicts only: no harmful text
        write_text(out / "results.md", markdown(result))
    return result


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f}"


def _ci(c: Sequence[float] | None, scale: float = 100, fmt: str = "{:.1f}") -> str:
    return "—" if not c else f"{fmt.format(scale * c[0])}–{fmt.format(scale * c[1])}"


def _kappa(k: float | None) -> str:
    return "—" if k is None else f"{k:.2f}"


def _row(name: str, m: dict[str, Any]) -> str:
    if m.get("agreement") is None:
        return f"| {name} | {m['n']} | {m['undecided']} | — | — | — | — | — | — | — |"
    k = f"{_kappa(m['kappa'])} ({_ci(m['kappa_ci95'], 1, '{:.2f}')})"
    return (f"| {name} | {m['n']} | {m['undecided']} | {_pct(m['agreement'])} ({_ci(m['agreement_ci95'])}) | "
            f"{_pct(m['precision'])} | {_pct(m['recall'])} | {_pct(m['f1'])} | {_pct(m['fpr'])} | {_pct(m['fnr'])} | {k} |")


HEADER = ("| {} | n | undecided | agreement % (95% CI) | precision % | recall % | F1 % | FPR % | FNR % | kappa (95% CI) |\n"
          "|---|---:|---:|---|---:|---:|---:|---:|---:|---|")


def markdown(result: dict[str, Any]) -> str:
    parts = [f"# Judge agreement with human labels: {result['judge']}", "",
             "\"unsafe\" is the positive class; metrics over decided pairs, bootstrap 95% CIs."]
    if result.get("fit_on"):
        parts.append(f"Fit: {result['fit_on']}. A pair the judge was fit on, or whose request it saw, is left "
                     "out of every figure.")
    for stem, e in result["files"].items():
        parts += ["", f"## {stem}", "",
                  f"{e['pairs']} pairs, {e['excluded_fit']} left out (the judge was fit on them or on their request).", ""]
        if "overall" not in e:
            continue
        parts += [HEADER.format("subset"), _row("all", e["overall"])]
        parts += [_row(g, m) for g, m in e["by_subset"].items()]
        if e["reference"]:
            parts += ["", "Published judges on the same pairs:", "", HEADER.format("judge")]
            parts += [_row(name, m) for name, m in e["reference"].items()]
    return "\n".join(parts) + "\n"


# -- the registry of measured agreement ----------------------------------------------------------

def summary(result: dict[str, Any]) -> dict[str, Any]:
    """What a figure judged by this judge cites: per file, agreement and kappa with CIs and n."""
    files = {stem: {k: e["overall"][k] for k in ("n", "decided", "agreement", "agreement_ci95", "kappa",
                                                  "kappa_ci95", "precision", "recall", "fpr", "fnr")}
             for stem, e in result["files"].items() if "overall" in e}
    return {"fit_on": result.get("fit_on"), "date": result["date"], "files": files}


def record(result: dict[str, Any], registry: Path = REGISTRY) -> None:
    data = read_json(registry) if registry.is_file() else {}
    data[result["judge"]] = summary(result)
    write_json(registry, dict(sorted(data.items())))


def measured_agreement(judge_name: str, registry: Path = REGISTRY) -> dict[str, Any] | None:
    """The recorded agreement of a judge with human labels, or None when it was never measured."""
    if not registry.is_file():
        return None
    return json.loads(registry.read_text(encoding="utf-8")).get(judge_name)


def agreement_phrase(judge_name: str, agreement: Mapping[str, Any] | None) -> str:
    """One line naming the judge and its measured agreement, for every page that shows a judged figure."""
    if not agreement or not agreement.get("files"):
        return f"judged by `{judge_name}`: agreement with human labels NOT measured"
    # JailbreakBench first: its labels are human harm judgements; XSTest's are derived.
    files = sorted(agreement["files"].items(), key=lambda kv: not kv[0].startswith("jbb"))
    bits = [f"{_pct(f['agreement'])}% agreement ({_ci(f['agreement_ci95'])}), kappa {_kappa(f['kappa'])} "
            f"on {f['decided']} {stem} pairs" for stem, f in files]
    return f"judged by `{judge_name}`: " + "; ".join(bits)
