"""`aloe eval-open` (free-text answers: judge, reference metrics, per specialty) and `aloe eval-bias`."""

from __future__ import annotations

import argparse
from pathlib import Path

from aloe.models.spec import DEFAULT_MODEL
from aloe.models.precision import add_policy_args


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval-open", help="open-ended evaluation: free-text answers, judge, reference metrics",
                       description="Answer open questions in free text; grade them with an LLM judge (any model "
                                   "spec), ROUGE-L, embedding similarity and relaxed perplexity; per specialty.")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"model spec (default {DEFAULT_MODEL})")
    p.add_argument("--sets", default="openmedqa,liveqa_medical,medquad",
                   help="comma-separated: openmedqa, liveqa_medical, medquad, or jsonl:PATH "
                        "(JSONL of {id, question, reference?, specialty?})")
    p.add_argument("--judge", default=None, help="judge model spec, e.g. openai:http://127.0.0.1:8000/v1#name")
    p.add_argument("--specialty-model", default=None,
                   help="model spec that tags specialties (default: the offline keyword classifier)")
    p.add_argument("--limit", type=int, default=None, help="first N questions of each set")
    p.add_argument("--data-dir", type=Path, default=None, help="a folder laid out like shared/data")
    p.add_argument("--max-new-tokens", type=int, default=128, help="answer length")
    p.add_argument("--judge-max-new-tokens", type=int, default=256, help="judge reply length")
    p.add_argument("--no-perplexity", action="store_true", help="skip relaxed perplexity")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--out", type=Path, default=None, help="output folder (default runs/eval-open/<model>)")
    p.add_argument("--no-progress", action="store_true")
    add_policy_args(p)
    p.set_defaults(func=run_open)

    b = sub.add_parser("eval-bias", help="counterfactual bias probes: answer flip rates per patient attribute",
                       description="Rewrite MCQ vignettes with the patient's sex, age, ethnicity or socioeconomic "
                                   "cues changed and report how often the model's answer flips, with CIs.")
    b.add_argument("--model", default=DEFAULT_MODEL)
    b.add_argument("--benchmarks", default="medqa", help="comma-separated MCQ benchmarks to build probes from")
    b.add_argument("--attributes", default="all", help="'all' or some of sex,age,ethnicity,socioeconomic")
    b.add_argument("--limit", type=int, default=None, help="first N questions of each benchmark")
    b.add_argument("--target", choices=["letter", "text"], default="text",
                   help="score the option texts (default: small models answer one letter whatever the question, "
                        "which hides any flip) or the option letters, as `aloe eval --target`")
    b.add_argument("--data-dir", type=Path, default=None)
    b.add_argument("--batch-size", type=int, default=8)
    b.add_argument("--out", type=Path, default=None, help="output folder (default runs/eval-bias/<model>)")
    b.add_argument("--no-progress", action="store_true")
    add_policy_args(b)
    b.set_defaults(func=run_bias)


def _positive(limit: int | None) -> None:
    if limit is not None and limit < 1:
        raise ValueError("--limit must be at least 1")


def run_open(args: argparse.Namespace) -> int:
    from aloe.evaluate.openended.run import OpenEvalRequest, run_open_eval
    from aloe.models.spec import parse_model_spec

    _positive(args.limit)
    sets = [s.strip() for s in args.sets.split(",") if s.strip()]
    if not sets:
        raise ValueError("--sets names no set")
    out = args.out or Path("runs") / "eval-open" / parse_model_spec(args.model).slug
    run_open_eval(OpenEvalRequest(model=args.model, sets=sets, out_dir=out, judge=args.judge,
                                  specialty_model=args.specialty_model, limit=args.limit, data_dir=args.data_dir,
                                  max_new_tokens=args.max_new_tokens,
                                  judge_max_new_tokens=args.judge_max_new_tokens, perplexity=not args.no_perplexity,
                                  batch_size=args.batch_size, progress=not args.no_progress))
    print((out / "results.md").read_text())
    print(f"answers and metrics in {out}")
    return 0


def run_bias(args: argparse.Namespace) -> int:
    from aloe.evaluate.bias.probes import ATTRIBUTES
    from aloe.evaluate.bias.run import attributes_arg, run_bias_eval
    from aloe.models.hf import HFCausalLM
    from aloe.models.spec import parse_model_spec

    _positive(args.limit)
    spec = parse_model_spec(args.model)
    if spec.kind in ("openai", "vllm"):
        raise ValueError(f"{args.model}: bias probes score answers by log-likelihood and need the weights in-process")
    attributes = attributes_arg(args.attributes, list(ATTRIBUTES))
    out = args.out or Path("runs") / "eval-bias" / spec.slug
    lm = HFCausalLM.from_spec(spec, batch_size=args.batch_size)  # scoring: the policy's precision and device
    run_bias_eval(lm, args.model, args.benchmarks, attributes, out, limit=args.limit, target=args.target,
                  data_dir=args.data_dir, progress=not args.no_progress)
    print((out / "results.md").read_text())
    print(f"probes and metrics in {out}")
    return 0
