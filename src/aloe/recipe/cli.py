"""`aloe run [RECIPE]`: the whole Aloe recipe from one YAML (the demo when none is given)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run a whole recipe: curate, sft, merge, DPO x2, eval, safety, report",
                       description="Run a recipe's stages in order in a run directory; unchanged stages are "
                                   "skipped, a killed run resumes. Without RECIPE, the embedded demo.")
    p.add_argument("recipe", nargs="?", help="recipe YAML, or a packaged recipe's name (demo, full-cpu, "
                                             "aloe-beta-8b, aloe-qwen2.5-7b); default: demo")
    p.add_argument("--dry-run", action="store_true", help="validate, resolve paths and models, print the plan "
                                                           "and its estimated cost; run nothing")
    p.add_argument("--from", dest="start", metavar="STAGE", help="run from this stage on (earlier ones must be done)")
    p.add_argument("--only", nargs="+", metavar="STAGE", default=[], help="run only these stages")
    p.add_argument("--run-dir", type=Path, help="default: the recipe's run_dir, else runs/<name>")
    p.add_argument("--data-dir", type=Path, help="a folder laid out like shared/data (overrides the recipe's)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a recipe value (parsed as YAML), e.g. --set sft.max_steps=5")
    p.add_argument("--device", help="auto|cpu|cuda|cuda:N|mps: where every model of the run goes (overrides the "
                                    "recipe's `device`)")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"],
                   help="overrides the recipe's `precision` (per role: aloe.models.precision.resolve_policy)")
    p.add_argument("--json", action="store_true", help="print the manifest (or the plan) as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from aloe.recipe.plan import check_recipe, estimate_cost, format_plan, stage_steps
    from aloe.recipe.runner import Runner
    from aloe.recipe.schema import load_recipe, resolve_recipe_path
    from aloe.recipe.stages import WIRED, Context, build_stages

    path = resolve_recipe_path(args.recipe)
    overrides = [*args.set, *(f"{k}={v}" for k, v in (("device", args.device), ("precision", args.precision)) if v)]
    recipe = load_recipe(path, overrides)
    data_dir = args.data_dir or (Path(recipe.data_dir) if recipe.data_dir else None)
    if data_dir is not None and not data_dir.is_dir():
        raise FileNotFoundError(f"{path}: data_dir {data_dir} is not a folder")
    run_dir = args.run_dir or Path(recipe.run_dir or Path("runs") / recipe.name)
    ctx = Context(recipe, run_dir.resolve(), data_dir.resolve() if data_dir else None)
    stages = build_stages(recipe)
    engine = recipe.engine.model_dump(exclude_none=True)
    runner = Runner(run_dir.resolve(), stages, ctx,
                    manifest_extra={"recipe": str(path), "name": recipe.name, "recipe_sha256": _sha(path),
                                    "overrides": overrides, "data_dir": str(ctx.data_dir or "packaged slices"),
                                    "policy": ctx.policy.record(), "engine": engine},
                    identity={"policy": ctx.policy.key(), "engine": engine}, keep_scratch=recipe.keep_checkpoints)
    selected = runner.select(args.start, args.only)
    if args.dry_run:
        checks = check_recipe(recipe, ctx)
        plan = runner.plan(selected)
        steps = stage_steps(recipe, ctx)
        for row in plan:
            if row["name"] in WIRED:
                row["set_by_runner"] = WIRED[row["name"]](ctx)
            row["runs_on"] = steps.get(row["name"], [])
        cost = estimate_cost(recipe, ctx)
        if args.json:
            print(json.dumps({"checks": checks, "plan": plan, "cost": cost}, indent=2))
        else:
            print(format_plan(recipe, path, run_dir, checks, plan, cost))
        return 1 if any(c["level"] == "error" for c in checks) else 0
    from aloe.models.backends import use_engine
    from aloe.models.precision import use_policy

    ctx.policy.require_device()
    _write_resolved(recipe, run_dir)
    with use_policy(ctx.policy), use_engine(recipe.engine):
        manifest = runner.run(selected)
    if args.json:
        print(json.dumps(manifest, indent=2))
    else:
        report = run_dir / "report" / "index.html"
        done = sum(r.get("status") in ("done", "skipped") for r in manifest["stages"])
        print(f"{done}/{len(manifest['stages'])} stages complete in {run_dir}"
              f"{f'; report: {report}' if report.is_file() else ''}; peak memory {manifest['peak_rss_mib']:.0f} MiB",
              file=sys.stderr)
    return 0


def _sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write_resolved(recipe, run_dir: Path) -> None:
    import yaml

    from aloe.io import write_text

    write_text(run_dir / "recipe.yaml", yaml.safe_dump(recipe.model_dump(mode="json", exclude_none=True), sort_keys=False))
