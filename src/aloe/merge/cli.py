"""`aloe merge CONFIG -o OUT`: merge checkpoints per a merge YAML (or a recipe's `merge:` section)."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("merge", help="merge checkpoints (linear, slerp, task_arithmetic, ties, dare_ties, dare_linear)")
    p.add_argument("config", help="merge YAML, or a recipe with a `merge:` section")
    p.add_argument("-o", "--out", required=True, help="output checkpoint folder")
    p.add_argument("--method", help="override the config's method")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from aloe.merge.merger import load_merge_config, merge_checkpoints

    cfg = load_merge_config(args.config)
    if args.method:
        cfg = cfg.model_copy(update={"method": args.method})
    out = merge_checkpoints(cfg, args.out)
    print(f"merged ({cfg.method}) -> {out}")
    return 0
