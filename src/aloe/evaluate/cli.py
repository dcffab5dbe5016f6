"""`aloe eval`: medical MCQA benchmarks on any model spec."""

from __future__ import annotations

import argparse
from pathlib import Path

from aloe.models.spec import DEFAULT_MODEL
from aloe.models.precision import add_policy_args


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate a model on medical multiple-choice benchmarks",
                       description="Evaluate a model on medical MCQA benchmarks (log-likelihood or generative).")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"model spec (default {DEFAULT_MODEL})")
    p.add_argument("--benchmarks", default="all", help="comma-separated names, or 'all'")
    p.add_argument("--limit", type=int, default=None, help="first N questions of each benchmark")
    p.add_argument("--mode", choices=["loglik", "generate"], default="loglik")
    p.add_argument("--target", choices=["letter", "text"], default="letter",
                   help="loglik: score the option letters or the option texts")
    p.add_argument("--shots", type=int, default=0, help="few-shot examples from each benchmark's pool")
    p.add_argument("--chat-template", choices=["auto", "on", "off"], default="auto",
                   help="auto: off for loglik (as lm-eval), on for generate")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="a folder laid out like shared/data (default: the slices shipped with aloe)")
    p.add_argument("--source", choices=["local", "hub"], default="local")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=None,
                   help="answer length (default 384)")
    p.add_argument("--seed", type=int, default=None, help="default 1234")
    p.add_argument("--out", type=Path, default=None, help="output folder (default runs/eval/<model>)")
    p.add_argument("--no-progress", action="store_true")
    add_policy_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from aloe.mcq.benchmarks import parse_benchmarks
    from aloe.evaluate.mcqa import MCQASettings
    from aloe.evaluate.run import EvalRequest, run_eval
    from aloe.models.spec import parse_model_spec

    benches = parse_benchmarks(args.benchmarks)
    spec = parse_model_spec(args.model)
    if args.limit is not None and args.limit < 1:
        raise ValueError("--limit must be at least 1")
    chat = {"on": True, "off": False, "auto": args.mode == "generate"}[args.chat_template]
    settings = MCQASettings(mode=args.mode, target=args.target, shots=args.shots, chat=chat,
                            seed=1234 if args.seed is None else args.seed,
                            max_new_tokens=384 if args.max_new_tokens is None else args.max_new_tokens)
    out = args.out or Path("runs") / "eval" / spec.slug
    summary = run_eval(EvalRequest(model=args.model, benchmarks=benches, settings=settings, out_dir=out,
                                   limit=args.limit, data_dir=args.data_dir, source=args.source,
                                   batch_size=args.batch_size, progress=not args.no_progress))
    print((out / "results.md").read_text())
    print(f"macro average {100 * summary['macro_accuracy']:.1f} over {len(benches)} benchmarks; "
          f"predictions and metrics in {out}")
    return 0
