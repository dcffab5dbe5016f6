"""The shape of `aloe eval`'s results: `<bench>/metrics.json` per benchmark (its completion marker)
and the run's `metrics.json`, both written by `aloe.evaluate.run.run_eval`; the report reads the run's
file (eval/<label>/zero-shot/metrics.json) through `EvalMetrics.read`. Writer and readers share
these models, so a change of shape fails validation (and the tests) instead of rendering wrongly."""

from __future__ import annotations

from typing import Any

from aloe.result_file import ResultFile


class BenchmarkMetrics(ResultFile):
    n: int
    accuracy: float
    ci95: tuple[float, float]  # bootstrap
    acc_norm: float | None = None  # log-likelihood scoring: accuracy with length-normalised option scores
    acc_norm_ci95: tuple[float, float] | None = None
    unparsable: int | None = None  # generative scoring: answers with no letter found
    benchmark: str
    title: str
    model: str
    settings: dict[str, Any]  # MCQASettings.describe(): its keys depend on the mode
    fingerprint: str  # weights, settings and questions: a rerun reuses the result only while it matches
    seconds: float
    note: str | None = None  # the benchmark's caveat, when it has one


class EvalMetrics(ResultFile):
    model: str
    settings: dict[str, Any]
    limit: int | None
    macro_accuracy: float  # the papers' headline: the unweighted mean over benchmarks
    benchmarks: dict[str, BenchmarkMetrics]
    seconds: float
