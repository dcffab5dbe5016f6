"""The shape of `aloe eval --strategy`'s results: `<bench>/<strategy>.metrics.json` per benchmark and
strategy (its completion marker) and the run's `metrics.json`, both written by
`aloe.infer.strategy_eval.run_strategy_eval`; the report reads the run's file
(eval/<label>/strategies/metrics.json) through `StrategyEvalMetrics.read`. Writer and readers share
these models, so a change of shape fails validation (and the tests) instead of rendering wrongly."""

from __future__ import annotations

from typing import Any

from aloe.result_file import ResultFile


class StrategyMetrics(ResultFile):
    """One strategy on one benchmark (aloe.infer.runner.summarize)."""

    n: int
    accuracy: float
    ci95: tuple[float, float]  # bootstrap
    unparsable: int
    samples: int  # completions drawn, retries included
    retries: int
    delta: float | None = None  # to zero-shot on the same questions; absent for zero-shot itself
    delta_ci95: tuple[float, float] | None = None  # paired bootstrap


class StrategyRunMetrics(StrategyMetrics):
    """`<bench>/<strategy>.metrics.json`: the figures and what a rerun must match to reuse them."""

    benchmark: str
    strategy: str
    model: str
    fingerprint: str  # weights, the strategy's knobs, questions (and pool, corpus, CoT database)
    seconds: float | None  # None: reused from a marker that did not record it


class StrategyEvalMetrics(ResultFile):
    """The run's `metrics.json`."""

    model: str
    strategies: list[str]  # zero-shot first: the baseline of every delta
    limit: int | None
    config: dict[str, Any]  # InferConfig.model_dump(mode="json")
    benchmarks: dict[str, dict[str, StrategyMetrics]]  # bench -> strategy -> figures
    macro: dict[str, float]  # strategy -> unweighted mean accuracy over benchmarks
    seconds: float
