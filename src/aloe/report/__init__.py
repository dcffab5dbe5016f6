"""The run's report: one self-contained HTML page, the model card and the risk card."""

from __future__ import annotations

from pathlib import Path

from aloe.report.model_card import write_model_card
from aloe.report.page import render_report
from aloe.report.risk_card import write_risk_card
from aloe.report.rundir import load_run

__all__ = ["render_all", "render_report", "write_model_card", "write_risk_card"]


def render_all(run_dir: str | Path, model_dir: str | Path | None = None) -> dict[str, Path]:
    """Risk card, model card (when the final model folder exists) and the page, which links both."""
    out = {"risk_card": write_risk_card(run_dir)}
    folder = Path(model_dir) if model_dir else load_run(run_dir).final_model_dir()
    if folder is not None and folder.is_dir():
        out["model_card"] = write_model_card(run_dir, folder)
    out["report"] = render_report(run_dir)
    return out
