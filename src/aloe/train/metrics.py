"""The shapes of the trainers' results: `metrics.json` of an SFT run (`SFTMetrics`, written by
`aloe.train.sft.run_sft`), of each DPO stage (`DPOStageMetrics`, align/stage<k>/metrics.json) and of
the whole alignment (`DPOMetrics`, align/metrics.json), both written by `aloe.train.align.run_align`;
read by the recipe runner (also from a trainer launched in its own processes) and the report.
Writer and readers share these models, so a change of shape fails validation (and the tests)
instead of rendering as a blank cell."""

from __future__ import annotations

from typing import Any

from aloe.result_file import ResultFile


class Precision(ResultFile):
    """`aloe.train.common.precision_record`: what the run computed in, on what hardware."""
    device: str
    compute: str  # bf16 | fp16 | fp32
    weights: str
    cpu: dict[str, Any] | None = None  # aloe.models.precision.cpu_info(), on a CPU
    gpu: str | None = None  # the device name, on CUDA


class SFTMetrics(ResultFile):
    train_examples: int
    eval_examples: int
    eval_loss_before: float | None = None  # only with held-out conversations
    resumed_from: str | None  # the checkpoint a restarted run went on from
    train_loss: float
    steps: int
    train_runtime_s: float | None
    eval_loss_after: float | None = None
    precision: Precision


class PreferenceFigures(ResultFile):
    """`aloe.train.align.preference_metrics` on the held-out pairs."""
    pairs: int
    preference_accuracy: float
    preference_accuracy_per_token: float
    logp_margin: float
    reward_margin: float | None = None  # after training only: measured against the stage's starting model
    reward_accuracy: float | None = None


class DPOStageMetrics(ResultFile):
    stage: int
    start_model: str
    train_pairs: int
    heldout_pairs: int
    beta: float
    loss_type: str
    heldout_before: PreferenceFigures | None = None  # only when the stage held pairs out
    resumed_from: str | None
    steps: int
    train_loss: float
    train_runtime_s: float | None
    heldout_after: PreferenceFigures | None = None
    precision: Precision


class RefusalRate(ResultFile):
    prompts: int
    refused: int
    refusal_rate: float
    judge: str


class RefusalEval(ResultFile):
    start_model: str
    final_model: str  # a rerun reuses the figures only for the same final model
    before: RefusalRate
    after: RefusalRate


class DPOMetrics(ResultFile):
    stages: list[DPOStageMetrics]
    refusal: RefusalEval | None = None  # only with `refusal_eval`
