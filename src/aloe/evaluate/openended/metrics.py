"""The shape of `aloe eval-open`'s results: `<set>/metrics.json` per set (its completion marker) and
the run's `metrics.json`, both written by `aloe.evaluate.openended.run.run_open_eval`; the report
(eval/<label>/openended/metrics.json), the risk card and `aloe human-eval build` read them through
these models. Writer and readers share them, so a change of shape fails validation (and the tests)
instead of rendering wrongly."""

from __future__ import annotations

from aloe.result_file import ResultFile


class MeanSummary(ResultFile):
    """One figure over the questions that have it; n=0 (and no mean) when none has."""

    n: int
    mean: float | None = None
    ci95: tuple[float, float] | None = None  # bootstrap


class JudgeSummary(MeanSummary):
    unparsable: int  # verdicts the judge gave that could not be read; left out of the mean


class OpenSummary(ResultFile):
    """The figures of a group of questions (a set, a specialty, all); a figure is absent when no
    question of the run has it (no judge, no references, no in-process weights for perplexity)."""

    n: int
    judge_accuracy: JudgeSummary | None = None
    rouge_l: MeanSummary | None = None
    embedding_similarity: MeanSummary | None = None
    perplexity: MeanSummary | None = None
    relaxed_perplexity: MeanSummary | None = None

    def figure(self, name: str) -> MeanSummary | None:
        """A figure by its key (aloe.report.results.OPEN_METRICS names them)."""
        value = getattr(self, name, None)
        return value if isinstance(value, MeanSummary) else None


class OpenSetMetrics(OpenSummary):
    """`<set>/metrics.json`: the set's figures and what a rerun must match to reuse them."""

    set: str
    model: str
    judge: str | None
    fingerprint: str  # weights, judge, settings and questions
    seconds: float


class OpenEndedMetrics(ResultFile):
    """The run's `metrics.json`."""

    model: str
    judge: str | None
    limit: int | None
    sets: dict[str, OpenSetMetrics]
    overall: OpenSummary
    specialties: dict[str, OpenSummary]
