"""`aloe curate RECIPE.yaml` runs the stage; `aloe curate sources|dedup|decontam|cot ...` run its parts.

The parts read and write curation items as JSONL (`aloe curate sources` makes the first file), so a
corpus can be cleaned, deduplicated or decontaminated step by step, or on other machines.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any
from aloe.models.precision import add_policy_args, command_policy

PARTS = ("sources", "dedup", "decontam", "cot")


def _part_parser(name: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"aloe curate {name}")
    if name == "sources":
        p.add_argument("recipe", type=Path)
        p.add_argument("output", type=Path, help="items JSONL")
        p.add_argument("--data-dir", type=Path)
        return p
    p.add_argument("input", type=Path, help="items JSONL (from `aloe curate sources` or an earlier part)")
    p.add_argument("output", type=Path, help="items JSONL")
    if name == "dedup":
        p.add_argument("--threshold", type=float, default=0.7)
        p.add_argument("--num-perm", type=int, default=128)
        p.add_argument("--ngram", type=int, default=3)
        p.add_argument("--seed", type=int, default=1)
        p.add_argument("--engine", choices=["local", "ray"], default="local")
        p.add_argument("--no-exact", action="store_true", help="near-duplicates only")
    elif name == "decontam":
        p.add_argument("--benchmarks", default="all")
        p.add_argument("--ngram", type=int, default=13)
        p.add_argument("--min-coverage", type=float, default=0.2)
        p.add_argument("--embedding", action="store_true", help="also drop items embedding-close to a benchmark item")
        p.add_argument("--data-dir", type=Path, help="benchmark data (default: packaged slices)")
        p.add_argument("--report", type=Path, help="JSONL of removed items and what they matched")
    elif name == "cot":
        p.add_argument("--teacher", default="embedded:smollm2-135m-instruct")
        p.add_argument("--max-items", type=int, default=30)
        p.add_argument("--tries", type=int, default=4)
        p.add_argument("--max-new-tokens", type=int, default=384)
        p.add_argument("--cache-dir", type=Path, required=True)
        p.add_argument("--concurrency", type=int, default=8)
        p.add_argument("--timeout", type=float, default=120.0)
        p.add_argument("--retries", type=int, default=6)
        p.add_argument("--backoff", type=float, default=0.5)
        p.add_argument("--all-mcqs", action="store_true", help="send every MCQ, not only those of cot: true sources")
    if name in ("decontam", "cot"):  # the embedder, the teacher
        add_policy_args(p)
    return p


def _run_part(name: str, argv: list[str]) -> int:
    a = _part_parser(name).parse_args(argv)
    with command_policy(a):
        return _part(name, a)


def _part(name: str, a: argparse.Namespace) -> int:
    from aloe.curate import config as C
    from aloe.curate.items import Step
    from aloe.curate.sources import read_items
    from aloe.io import write_jsonl

    step: Step
    extra: dict[str, Any] = {}
    if name == "sources":
        from aloe.curate.pipeline import load_all

        items, counts = load_all(C.load_curate_config(a.recipe), a.data_dir)
        write_jsonl(a.output, (i.to_dict() for i in items))
        print(json.dumps({"loaded": counts}, indent=1))
        return 0
    items = read_items(a.input)
    if name == "dedup":
        from aloe.curate.dedup import ExactDedup, NearDedup

        cfg = C.DedupConfig(threshold=a.threshold, num_perm=a.num_perm, ngram=a.ngram, seed=a.seed, engine=a.engine)
        stats = {}
        if not a.no_exact:
            exact = ExactDedup()
            items = exact(items)
            stats["exact"] = exact.stats.to_dict()
        step = NearDedup(cfg)
        items = step(items)
        stats["near"] = step.stats.to_dict()
        extra = {"stats": stats}
    elif name == "decontam":
        from aloe.curate.decontam import Decontaminate

        step = Decontaminate(C.DecontamConfig(benchmarks=a.benchmarks, ngram=a.ngram, min_coverage=a.min_coverage,
                                              embedding=a.embedding), a.data_dir)
        items = step(items)
        if a.report:
            write_jsonl(a.report, step.report)
        extra = {"stats": step.stats.to_dict(), "removed": len(step.report)}
    else:
        from aloe.curate.cot import SynthesiseCoT

        if a.all_mcqs:
            for i in items:
                i.cot = i.mcq is not None
        step = SynthesiseCoT(C.CotConfig(teacher=a.teacher, max_items=a.max_items, tries=a.tries,
                                         max_new_tokens=a.max_new_tokens, concurrency=a.concurrency,
                                         timeout=a.timeout, max_retries=a.retries, backoff=a.backoff), a.cache_dir)
        items = step(items)
        extra = {"stats": step.stats.to_dict(), "cot": step.summary}
    write_jsonl(a.output, (i.to_dict() for i in items))
    print(json.dumps(extra, indent=1))
    return 0


def _run(args: argparse.Namespace) -> int:
    if args.target in PARTS:
        return _run_part(args.target, args.rest)
    # options after the recipe land in `rest` (REMAINDER keeps the parts' own options intact)
    after = argparse.ArgumentParser(prog="aloe curate RECIPE.yaml")
    after.add_argument("--out", type=Path, default=args.out)
    after.add_argument("--data-dir", type=Path, default=args.data_dir)
    add_policy_args(after)
    after.set_defaults(device=args.device, precision=args.precision)
    args = after.parse_args(args.rest, namespace=argparse.Namespace(target=args.target))
    with command_policy(args):
        return _curate(args)


def _curate(args: argparse.Namespace) -> int:
    from aloe.curate.config import load_curate_config
    from aloe.curate.pipeline import curate

    cfg = load_curate_config(args.target)
    out = args.out or Path("runs") / Path(args.target).stem / "curate"
    artifacts = curate(cfg, out, args.data_dir)
    card = json.loads(artifacts["data_card"].read_text(encoding="utf-8"))
    print(f"curated {card['splits']['train']} train + {card['splits']['validation']} validation conversations "
          f"in {card['seconds']} s; CoT verified {card['cot'].get('verified', 0)}/{card['cot'].get('attempted', 0)}; "
          f"decontamination removed {len(card['decontamination']['removed'])}")
    for k, v in artifacts.items():
        print(f"  {k}: {v}")
    return 0


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "curate", help="curate an SFT dataset: sources, clean, dedup, decontaminate, CoT, templates, mix",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="aloe curate RECIPE.yaml [--out DIR] [--data-dir DIR] [--device D] [--precision P]\n"
              "       aloe curate {sources,dedup,decontam,cot} ... (each with -h)")
    p.add_argument("target", help="a recipe YAML with a `curate:` section, or one of: " + ", ".join(PARTS))
    p.add_argument("--out", type=Path, help="output folder (default runs/<recipe>/curate)")
    p.add_argument("--data-dir", type=Path, help="data laid out like ../shared/data (default: packaged slices)")
    add_policy_args(p)
    p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    p.set_defaults(func=_run)
