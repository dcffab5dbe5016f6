"""Did every model of a run run on the GPU? Read from the run's manifest, which lists per stage each
model it used and where it really was (`python -m aloe.recipe.manifest_check RUN_DIR`; exit 1 if not).
`scripts/gpu-smoke.sh` runs it after the demo on a CUDA machine."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

# Stages that always run a model: each must list at least one. Curate runs one only with an
# in-process CoT teacher, merge never does (tensor arithmetic on the CPU), the report neither.
MODEL_STAGES = ("sft", "preferences", "redteam_pairs", "align", "eval_", "openended_", "bias_", "safety_")


def gpu_problems(manifest: dict[str, Any]) -> list[str]:
    """Everything in the manifest that did not run on a CUDA GPU; empty when all did."""
    device = str(manifest.get("policy", {}).get("device", "none recorded"))
    problems = [] if device.startswith("cuda") else [f"the run's device is {device}, not a CUDA GPU"]
    for row in manifest.get("stages", []):
        name, models = row["name"], row.get("models", [])
        if row.get("status") not in ("done", "skipped"):
            problems.append(f"{name}: {row.get('status')}, not done")
        elif name.startswith(MODEL_STAGES) and not models:
            problems.append(f"{name}: no model recorded")
        problems += [f"{name}: {m['kind']} {m['model']} ran on {m['device']}" for m in models
                     if not str(m["device"]).startswith("cuda")]
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("run", type=Path, help="a run directory, or its manifest.json")
    args = ap.parse_args(argv)
    path = args.run / "manifest.json" if args.run.is_dir() else args.run
    manifest = json.loads(path.read_text(encoding="utf-8"))
    print(f"{path}: device {manifest.get('policy', {}).get('device')}, engine {manifest.get('engine', {}).get('name')}")
    for row in manifest.get("stages", []):
        used = "; ".join(f"{m['kind']} {m['model']} on {m['device']} ({m['dtype']})" for m in row.get("models", []))
        print(f"  {row['name']:<17} {row.get('status', '?'):<8} {used or 'no model'}")
    problems = gpu_problems(manifest)
    for p in problems:
        print(f"NOT ON THE GPU: {p}")
    print("every model step ran on the GPU" if not problems else f"{len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
