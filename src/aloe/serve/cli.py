"""`aloe serve`: an OpenAI-compatible endpoint that answers MCQs with an inference strategy."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from pydantic import ValidationError

from aloe.infer.cli import add_config_args, config_from_args
from aloe.models.generator import Generator
from aloe.models.precision import add_policy_args
from aloe.models.spec import DEFAULT_MODEL


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve a model behind an OpenAI-compatible API, with a strategy",
                       description="OpenAI-compatible /v1/chat/completions and /v1/models. MCQ-like user "
                                   "turns are answered with --strategy; other chats pass through.")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"model spec (default {DEFAULT_MODEL})")
    p.add_argument("--served-name", default=None, help="the model id clients send (default: the spec)")
    p.add_argument("--strategy", default="zero-shot",
                   help="zero-shot|cot|sc-cot|medprompt|rag|medprompt+rag, or 'none' to pass everything through")
    p.add_argument("--pool", default="all",
                   help="kNN few-shot pool: comma-separated benchmark names whose few-shot pools to use, or 'all'")
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", default=os.environ.get("ALOE_API_KEY"),
                   help="require 'Authorization: Bearer KEY' (default: $ALOE_API_KEY; none: open)")
    p.add_argument("--max-concurrency", type=int, default=16,
                   help="requests in the server at once, waiting or generating; more get 429 with Retry-After")
    p.add_argument("--queue-timeout", type=float, default=120.0,
                   help="seconds a request may wait for the model to take it before a 503 (it is then dropped)")
    p.add_argument("--max-body-bytes", type=int, default=1_000_000)
    p.add_argument("--batch-size", type=int, default=8)
    add_policy_args(p)  # the policy is active for the whole command: the strategies' embedder follows it too
    p.add_argument("--engine", choices=["transformers", "vllm"], default="transformers",
                   help="what generates for a model with weights; an openai: model is proxied to its server")
    p.add_argument("--tensor-parallel-size", type=int, help="vLLM: GPUs per model")
    p.add_argument("--gpu-memory-utilization", type=float, help="vLLM: fraction of each GPU the engine claims")
    p.add_argument("--max-model-len", type=int, help="vLLM: context length (prompt + completion)")
    p.add_argument("--enable-prefix-caching", action="store_true", default=None, help="vLLM: reuse shared prompt prefixes")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="completion cache folder (default: none); behind a cache the model is a black box to "
                        "the server: no token streaming, usage, context checks or stopping of abandoned rows")
    add_config_args(p)
    p.set_defaults(func=run)


def build_generator(args: argparse.Namespace) -> Generator:
    """The served model: in-process transformers on the resolved device, vLLM (`--engine vllm`), or
    a running OpenAI-compatible server (`--model openai:URL#name`, e.g. `vllm serve`), proxied."""
    from aloe.models.backends import Engine, get_generator
    from aloe.models.precision import active_policy

    try:  # vLLM's dtype comes from --precision, as for every other model
        engine = Engine(name=args.engine, tensor_parallel_size=args.tensor_parallel_size,
                        gpu_memory_utilization=args.gpu_memory_utilization, max_model_len=args.max_model_len,
                        enable_prefix_caching=args.enable_prefix_caching)
    except ValidationError as e:
        raise ValueError(f"--engine {args.engine}: {e.errors()[0]['msg']}") from None
    policy = active_policy()
    return get_generator(args.model, cache_dir=args.cache_dir, engine=engine, device=policy.device,
                         dtype=policy.generate_dtype, batch_size=args.batch_size)


def run(args: argparse.Namespace) -> int:
    from aloe.mcq.benchmarks import load_split, parse_benchmarks
    from aloe.infer.strategies import build_strategy
    from aloe.serve.app import AloeServer, ServeConfig

    if args.max_concurrency < 1:
        raise ValueError("--max-concurrency must be at least 1")
    if args.queue_timeout <= 0:
        raise ValueError("--queue-timeout must be positive")
    strategy = None if args.strategy == "none" else build_strategy(args.strategy, config_from_args(args))
    pool = []
    if strategy is not None and strategy.uses_pool:
        for bench in parse_benchmarks(args.pool):
            if bench.fewshot:
                pool += load_split(bench, "fewshot", args.data_dir)
    if strategy is not None and strategy.preset.rag:
        _ = strategy.retriever  # build or load the indexes before the first request
    generator = build_generator(args)
    cfg = ServeConfig(model_name=args.served_name or args.model, api_key=args.api_key,
                      max_concurrency=args.max_concurrency, queue_timeout_s=args.queue_timeout,
                      max_body_bytes=args.max_body_bytes)
    server = AloeServer((args.host, args.port), cfg, generator, strategy, pool)
    host, port = server.server_address[:2]
    print(f"serving {cfg.model_name} (strategy {args.strategy}) on http://{host}:{port}/v1", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
