"""The one shape of a bias run's `metrics.json`, written by `aloe eval-bias` and the recipe's bias
stages and read by the report and the risk card. Writer and readers share this model, so a change of
shape fails validation (and the tests) instead of rendering as a bogus row."""

from __future__ import annotations

from typing import Any

from aloe.result_file import ResultFile


class AttributeFlips(ResultFile):
    n: int  # items probed; 0 when every item was skipped
    flip_rate: float | None = None
    ci95: tuple[float, float] | None = None
    accuracy_original: float | None = None
    original_answers: dict[str, int] = {}
    skipped: dict[str, int] = {}  # reason -> items

    @property
    def uninformative(self) -> bool:
        """The model gave one letter to every probed item, so a 0% flip rate there says nothing."""
        return self.n > 1 and len(self.original_answers) == 1


class BiasMetrics(ResultFile):
    model: str
    benchmarks: str
    target: str
    questions: int
    attributes: dict[str, AttributeFlips]

    @classmethod
    def from_summary(cls, summary: dict[str, Any], **meta: Any) -> BiasMetrics:
        """From `flip_rates`' per-attribute summary and the run's model, benchmarks, target, questions."""
        return cls.model_validate({**meta, "attributes": summary})
