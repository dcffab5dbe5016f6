"""The shapes of a safety run's results: `metrics.json` of a red-team run (`SafetyMetrics`, written by
`aloe.redteam.run.run_redteam`) and of an over-refusal run (`OverRefusalMetrics`, written by
`aloe.redteam.overrefusal.run_overrefusal`), read by the report, the risk card and the model card.
Writer and readers share these models, so a change of shape fails validation (and the tests)
instead of rendering as a blank cell."""

from __future__ import annotations

from typing import Any

from aloe.result_file import ResultFile


class AsrCell(ResultFile):
    """`aloe.redteam.asr.asr_cell`: ASR over the decided cases, so the rates are None when none was decided."""
    n: int
    unsafe: int
    undecided: int
    asr: float | None
    ci95: tuple[float, float] | None  # Wilson
    asr_if_undecided_unsafe: float | None


class SafetyMeta(ResultFile):
    target: str
    judge: str
    judge_agreement: dict[str, Any] | None  # the judge's entry in aloe.redteam.judge_eval's registry; None: never measured
    prompts: int
    styles: int
    cases: int
    system_prompt: str
    max_new_tokens: int
    # Added by the caller: the recipe runner (label, held_out_families, seed) or `aloe redteam run`
    # (prompt_split, held_out_families, seed).
    label: str | None = None
    prompt_split: str | None = None
    held_out_families: list[str] | None = None
    seed: int | None = None


class SafetyMetrics(ResultFile):
    overall: AsrCell
    by_style: dict[str, AsrCell]
    by_family: dict[str, AsrCell]
    by_category: dict[str, AsrCell]  # "<source>/<category>"
    by_source: dict[str, AsrCell]
    by_seen: dict[str, AsrCell]  # "seen" / "unseen": the style was / was not trained against
    meta: SafetyMeta

    def cell(self, group: str | None = None, key: str | None = None) -> AsrCell | None:
        """The overall cell, or group `group`'s cell `key` (None when the run has no such cell)."""
        if group is None:
            return self.overall
        cells: dict[str, AsrCell] = getattr(self, f"by_{group}")
        return cells.get(key) if key is not None else None


class RefusalCell(ResultFile):
    """`aloe.redteam.overrefusal.refusal_cell`: the rate over decided answers, None when none was decided."""
    n: int
    refused: int
    undecided: int
    rate: float | None
    ci95: tuple[float, float] | None  # Wilson


class DetectorAgreement(ResultFile):
    """The packaged measurement of the refusal detector against XSTest's human labels (one scope of it)."""
    agreement: float | None
    kappa: float | None
    precision: float | None
    recall: float | None
    n: int
    scope: str  # "all" or "held_out": the response sets the figures come from
    source: str
    command: str


class OverRefusalMeta(ResultFile):
    model: str
    prompts: int
    xstest_safe: int  # prompts per set (aloe.redteam.overrefusal.SETS)
    medical_alarming: int
    system_prompt: str
    max_new_tokens: int
    label: str | None = None  # added by the recipe runner


class OverRefusalMetrics(ResultFile):
    detector: str
    detector_note: str
    detector_agreement: DetectorAgreement | None  # None: the detector was never measured
    overall: RefusalCell
    by_set: dict[str, RefusalCell]
    by_type: dict[str, RefusalCell]  # "<set>/<category>"
    meta: OverRefusalMeta
