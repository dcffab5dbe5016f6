"""`aloe report RUN_DIR`: the HTML report, the risk card and the model card of a run directory."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="render a run's HTML report, risk card and model card",
                       description="Render RUN/report/index.html (self-contained), RUN/report/risk_card.md and "
                                   "README.md in the final model folder from a run directory (docs/run-directory.md). "
                                   "Missing sections render as 'not run'.")
    p.add_argument("run_dir", type=Path, help="the run directory (runs/<recipe name>)")
    p.add_argument("--model-dir", type=Path, default=None,
                   help="folder for the model card (default: the last DPO stage's final/ folder, when present)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from aloe.report import render_all

    paths = render_all(args.run_dir, args.model_dir)
    if "model_card" not in paths:
        print("model card: not written (no final model folder; pass --model-dir)")
    for name, path in paths.items():
        print(f"{name.replace('_', ' ')}: {path}")
    return 0
