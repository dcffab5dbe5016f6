"""Where a run directory keeps each model (docs/run-directory.md): the one list of the models a run
makes and the one place that says where their weights are. The runner writes there, the report
and the human-assessment builder read from there."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, get_args

Label = Literal["base", "sft", "merged", "aligned"]
LABELS: tuple[str, ...] = get_args(Label)  # in pipeline order
DPO_STAGES = 2  # stage 1: medical + general + safety pairs, stage 2: red-team pairs


def model_dir(run_dir: Path, label: str, merged: bool = True) -> Path:
    """The weights of a model the run trains; `merged=False` when the recipe has no merge, so the
    merged model is the SFT model. The base model is not in the run (it is the recipe's)."""
    if label == "sft":
        return run_dir / "sft" / "final"
    if label == "merged":
        return run_dir / "merge" / "model" if merged else model_dir(run_dir, "sft")
    if label == "aligned":
        return run_dir / "align" / f"stage{DPO_STAGES}" / "final"  # the red-team stage is the last
    raise ValueError(f"{label!r} is not a model the run trains; expected one of {', '.join(LABELS[1:])}")
