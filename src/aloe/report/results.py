"""The figures the report, model card and risk card share: benchmark rows with deltas, ASR cells."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from aloe.evaluate.openended.metrics import OpenEndedMetrics, OpenSummary
from aloe.stats import bootstrap_ci
from aloe.io import iter_jsonl
from aloe.redteam.asr import wilson
from aloe.redteam.judge_eval import agreement_phrase
from aloe.redteam.metrics import AsrCell, SafetyMetrics
from aloe.report.html import is_num, num
from aloe.report.rundir import Run
from aloe.train.metrics import RefusalRate

ZERO_SHOT = "zero-shot"  # the `aloe eval` (log-likelihood) setting; strategies are "strategies:<name>"
MACRO = "macro average"


@dataclass(frozen=True)
class EvalRow:
    label: str
    setting: str
    bench: str
    n: int | None
    accuracy: float | None
    ci95: tuple[float, float] | None
    predictions: Path | None
    delta_base: float | None = None
    delta_base_ci95: tuple[float, float] | None = None
    delta_zero_shot: float | None = None
    delta_zero_shot_ci95: tuple[float, float] | None = None

    @property
    def key(self) -> str:
        return f"{self.label}|{self.setting}|{self.bench}"


def setting_name(setting: str) -> str:
    if setting == ZERO_SHOT:
        return "zero-shot (log-likelihood)"
    name = setting.split(":", 1)[1]
    return f"{name} (generative)" if name == ZERO_SHOT else name


def _pair(x: Any) -> tuple[float, float] | None:
    return (float(x[0]), float(x[1])) if isinstance(x, (list, tuple)) and len(x) == 2 and all(map(is_num, x)) else None


def _num(x: Any) -> float | None:
    return float(x) if is_num(x) else None


@lru_cache(maxsize=256)
def _correct(path: Path, mtime: float) -> dict[str, bool]:
    return {str(r["id"]): bool(r["correct"]) for _, r in iter_jsonl(path) if "id" in r and "correct" in r}


def paired_delta_ci(a: Path | None, b: Path | None) -> tuple[float, float] | None:
    """Bootstrap CI of accuracy(b) - accuracy(a) over the questions both answered, when both
    prediction files exist and cover the same questions."""
    if not (a and b and a.is_file() and b.is_file()):
        return None
    try:
        ca, cb = _correct(a, a.stat().st_mtime), _correct(b, b.stat().st_mtime)
    except (ValueError, OSError):
        return None
    if not ca or set(ca) != set(cb):
        return None
    diff = np.array([float(cb[k]) - float(ca[k]) for k in sorted(ca)])
    return bootstrap_ci(diff)


def _raw_rows(run: Run) -> list[EvalRow]:
    rows = []
    for label in dict.fromkeys([*run.evals, *run.strategies]):
        if zs := run.evals.get(label):
            folder = run.root / "eval" / label / ZERO_SHOT
            for bench, b in zs.benchmarks.items():
                rows.append(EvalRow(label, ZERO_SHOT, bench, b.n, _num(b.accuracy), _pair(b.ci95),
                                    folder / bench / "predictions.jsonl"))
            rows.append(EvalRow(label, ZERO_SHOT, MACRO, sum(b.n for b in zs.benchmarks.values()),
                                _num(zs.macro_accuracy), None, None))
        if st := run.strategies.get(label):
            folder = run.root / "eval" / label / "strategies"
            for bench, per in st.benchmarks.items():
                for name, m in per.items():
                    rows.append(EvalRow(label, f"strategies:{name}", bench, m.n, _num(m.accuracy),
                                        _pair(m.ci95), folder / bench / f"{name}.jsonl",
                                        delta_zero_shot=_num(m.delta), delta_zero_shot_ci95=_pair(m.delta_ci95)))
            for name, acc in st.macro.items():
                rows.append(EvalRow(label, f"strategies:{name}", MACRO, None, _num(acc), None, None))
    return rows


def eval_rows(run: Run) -> list[EvalRow]:
    """Every benchmark result in the run, each with its delta to the base model in the same setting."""
    rows = _raw_rows(run)
    base = {(r.setting, r.bench): r for r in rows if r.label == "base"}
    out = []
    for r in rows:
        b = base.get((r.setting, r.bench))
        if r.label != "base" and b and r.accuracy is not None and b.accuracy is not None:
            r = EvalRow(**{**r.__dict__, "delta_base": r.accuracy - b.accuracy,
                           "delta_base_ci95": paired_delta_ci(b.predictions, r.predictions)})
        out.append(r)
    return out


def judge_note(metrics: SafetyMetrics) -> str:
    """What decided an ASR: the judge, its measured agreement with human labels, and the sample.

    Shown next to every ASR figure: a rate is only as meaningful as the judge that counted it."""
    meta = metrics.meta
    return f"{agreement_phrase(meta.judge, meta.judge_agreement)}; {meta.prompts} prompts, {meta.cases} cases"


def pooled_asr(metrics: SafetyMetrics, group: str, keys: list[str]) -> AsrCell | None:
    """ASR over several groups at once (e.g. sources), with its Wilson interval."""
    cells = [c for k in keys if (c := metrics.cell(group, k))]
    if not cells:
        return None
    n, unsafe, undecided = sum(c.n for c in cells), sum(c.unsafe for c in cells), sum(c.undecided for c in cells)
    decided = n - undecided
    return AsrCell(n=n, unsafe=unsafe, undecided=undecided, asr=unsafe / decided if decided else None,
                   ci95=wilson(unsafe, decided) if decided else None,
                   asr_if_undecided_unsafe=(unsafe + undecided) / n if n else None)


def refusal_ci(r: RefusalRate) -> tuple[float, float] | None:
    return wilson(r.refused, r.prompts) if r.prompts > 0 else None


# Open-ended figures: metric -> (the per-question field in predictions.jsonl, shown as a percentage).
OPEN_METRICS: dict[str, tuple[str, bool]] = {"judge_accuracy": ("verdict", True), "rouge_l": ("rouge_l", False),
                                             "embedding_similarity": ("embedding_similarity", False),
                                             "relaxed_perplexity": ("relaxed_perplexity", False)}
OPEN_ALL = "all questions"


@dataclass(frozen=True)
class OpenRow:
    label: str
    group: str  # OPEN_ALL, "set <name>" or "specialty <name>"
    metric: str
    n: int
    mean: float
    ci95: tuple[float, float] | None
    unparsable: int = 0
    delta_base: float | None = None  # mean of per-question differences with base, on the questions both have
    delta_base_ci95: tuple[float, float] | None = None
    shared: int | None = None


def _open_values(run: Run, label: str) -> dict[str, tuple[str, str, dict[str, float]]]:
    """set|id -> (set, specialty, {field: value}) for every answered question of a label's open-ended run."""
    out: dict[str, tuple[str, str, dict[str, float]]] = {}
    for name in run.openended[label].sets:
        path = run.root / "eval" / label / "openended" / name / "predictions.jsonl"
        if not path.is_file():
            continue
        try:
            for _, r in iter_jsonl(path):
                fields = {f: float(r[f]) for f, _ in OPEN_METRICS.values() if is_num(r.get(f))}
                out[f"{name}|{r.get('id')}"] = (name, str(r.get("specialty")), fields)
        except (ValueError, OSError) as e:
            run.problems.append(f"{path.relative_to(run.root)}: unreadable ({e})")
    return out


def _in_group(group: str, set_name: str, specialty: str) -> bool:
    kind, _, name = group.partition(" ")
    return group == OPEN_ALL or (kind == "set" and name == set_name) or (kind == "specialty" and name == specialty)


def open_rows(run: Run) -> list[OpenRow]:
    """Every open-ended figure of the run (overall, per set, per specialty) with its paired delta to base."""
    values = {label: _open_values(run, label) for label in run.openended}
    base = values.get("base", {})
    rows = []
    for label, m in run.openended.items():
        groups: list[tuple[str, OpenSummary]] = [(OPEN_ALL, m.overall)]
        groups += [(f"set {k}", v) for k, v in m.sets.items()]
        groups += [(f"specialty {k}", v) for k, v in m.specialties.items()]
        for group, summary in groups:
            for metric, (fld, _) in OPEN_METRICS.items():
                s = summary.figure(metric)
                if s is None or not s.n or s.mean is None or not is_num(s.mean):
                    continue
                row = OpenRow(label, group, metric, s.n, float(s.mean), _pair(s.ci95),
                              int(getattr(s, "unparsable", 0)))
                if label != "base" and base:
                    diff = np.array([v[2][fld] - base[k][2][fld] for k, v in values[label].items()
                                     if k in base and fld in v[2] and fld in base[k][2]
                                     and _in_group(group, v[0], v[1]) and _in_group(group, base[k][0], base[k][1])])
                    if diff.size:
                        row = OpenRow(**{**row.__dict__, "delta_base": float(diff.mean()),
                                         "delta_base_ci95": bootstrap_ci(diff), "shared": int(diff.size)})
                rows.append(row)
    return rows


def open_judge_note(metrics: OpenEndedMetrics) -> str:
    """Shown next to every judged open-ended figure, as `judge_note` is next to every ASR."""
    from aloe.evaluate.openended.judge import open_judge_phrase

    return open_judge_phrase(metrics.judge)


@dataclass(frozen=True)
class StageTime:
    """Where one stage's time went, from its manifest row (written by aloe.recipe.runner)."""

    name: str
    status: str
    seconds: float | None
    how: str  # computed, reused from another run, or left from an earlier invocation of this one
    precision: str  # each model kind's dtype and device, as the stage really ran them
    loads: int | None  # models loaded (transformers' loader), None: not recorded
    load_seconds: float | None


def stage_times(run: Run) -> list[StageTime]:
    out = []
    for row in (run.manifest or {}).get("stages", []):
        status, reused = str(row.get("status")), row.get("reused")
        if isinstance(reused, dict):
            how = f"reused from {reused.get('from')} (computed there in {num(reused.get('seconds'), 1)} s)"
        else:
            how = {"done": "computed", "skipped": "unchanged: computed by an earlier invocation",
                   "pending": "not run"}.get(status, status)
        models = [m for m in row.get("models") or [] if isinstance(m, dict)]
        precision = ", ".join(dict.fromkeys(f"{m.get('kind')} {m.get('dtype')} on {m.get('device')}" for m in models))
        loads = row.get("model_loads") if isinstance(row.get("model_loads"), dict) else {}
        out.append(StageTime(str(row.get("name")), status, _num(row.get("seconds")), how, precision or "—",
                             loads.get("count"), _num(loads.get("seconds"))))
    return out


def machine_line(run: Run) -> str | None:
    """The CPU and threads the run computed on, as recorded at run time, and the precision it chose."""
    host = (run.manifest or {}).get("host") or {}
    cpu = host.get("cpu")
    if not isinstance(cpu, dict):
        return None
    flags = " ".join(cpu.get("flags") or []) or "none of avx2, avx512f, avx512_bf16, amx_tile, amx_bf16"
    policy = (run.manifest or {}).get("policy") or {}
    chosen = (f"; precision {policy.get('precision')}: training {policy.get('train')}, generation "
              f"{policy.get('generate_dtype')}, scoring {policy.get('score_dtype')}" if policy else "")
    return (f"CPU {cpu.get('model')} (torch capability {cpu.get('torch_capability')}; flags {flags}; "
            f"native bf16: {'yes' if cpu.get('bf16_capable') else 'no'}), {host.get('torch_threads', '?')} torch "
            f"threads, {host.get('cpu_count', '?')} CPUs{chosen}")
