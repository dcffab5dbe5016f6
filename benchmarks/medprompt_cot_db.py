"""Medprompt's kNN worked examples: the dataset's explanations vs the model's own verified chains of thought.

On the embedded model, in this process: build the self-generated CoT database on the first
`--pool` questions of the benchmark's few-shot pool (a greedy chain of thought per question with
shuffled options, sampled retries up to `--attempts`, only chains reaching gold kept), then run
medprompt on the same `--questions` test questions twice, with kNN shots drawn from that same pool
slice: (a) as the dataset gives them (its explanation when it has one, else the answer letter
alone: today's default) and (b) from the CoT database. Both runs share every other knob and seed,
so each question is shown the same shuffled option orders: the difference is paired, and its
interval comes from a paired bootstrap over questions. Retries of unparsable samples are off to
bound the cost; an unparsable sample casts no vote in either run. Generation runs in bf16 where
the CPU computes it natively (AMX / AVX-512 BF16), else fp32. Completions are cached under --out,
so an interrupted run resumes where it stopped.

    TQDM_DISABLE=1 nohup .venv/bin/python benchmarks/medprompt_cot_db.py > /tmp/medprompt_cot_db.log 2>&1 &
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch

from aloe.infer.config import InferConfig
from aloe.infer.cot_db import build_cot_db
from aloe.infer.strategies import build_strategy
from aloe.mcq.benchmarks import BENCHMARKS, PACKAGED_DATA, load_split
from aloe.models.backends import HFGenerator
from aloe.models.completion_cache import CachedGenerator
from aloe.models.hf import HFCausalLM
from aloe.models.loading import weights_fingerprint
from aloe.models.precision import cpu_info, resolve_precision
from aloe.models.spec import DEFAULT_MODEL
from aloe.stats import bootstrap_ci

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def pct(x: float) -> str:
    return f"{100 * x:.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--benchmark", default="medqa")
    ap.add_argument("--data-dir", type=Path, default=SHARED_DATA if SHARED_DATA.is_dir() else PACKAGED_DATA)
    ap.add_argument("--pool", type=int, default=120, help="first N questions of the few-shot pool")
    ap.add_argument("--questions", type=int, default=100, help="first N test questions")
    ap.add_argument("--attempts", type=int, default=2)
    ap.add_argument("--k-shots", type=int, default=3)
    ap.add_argument("--n-samples", type=int, default=3)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=32, help="rows decoding together")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads; on a 2-core CPU shared with other jobs, 2 threads that wait on each "
                         "other ran generation ~10x slower than 1 (measured)")
    ap.add_argument("--out", type=Path, default=Path("/tmp/medprompt_cot_db"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()

    info = cpu_info()
    precision = resolve_precision("auto")
    dtype = {"bf16": "bfloat16", "fp32": "float32"}[precision]
    print(f"CPU: {info['model']} ({os.cpu_count()} cores visible)")
    print(f"flags: {' '.join(info['flags']) or '(none of the listed)'}; torch {torch.__version__}, "
          f"CPU capability {info['torch_capability']}, {torch.get_num_threads()} threads; "
          f"bf16 capable: {info['bf16_capable']} -> generation in {precision}")

    bench = BENCHMARKS[args.benchmark]
    questions = load_split(bench, "test", args.data_dir)[:args.questions]
    pool = load_split(bench, "fewshot", args.data_dir)[:args.pool]
    explained = sum(bool(p.explanation) for p in pool)
    print(f"{bench.name} from {args.data_dir}: {len(questions)} test questions; pool: first {len(pool)} of the "
          f"few-shot pool, {explained} with a dataset explanation", flush=True)

    t0 = time.perf_counter()
    lm = HFCausalLM.from_spec(args.model, dtype=dtype, batch_size=args.batch_size)
    # The precision is part of the identity: bf16 and fp32 completions must not answer for each other.
    gen = CachedGenerator(HFGenerator(lm, args.model), args.out / "cache",
                          identity=f"{weights_fingerprint(args.model)}|{dtype}")
    print(f"model {args.model} loaded in {time.perf_counter() - t0:.0f} s", flush=True)

    db = args.out / f"{bench.name}-cot-db.jsonl"
    t0 = time.perf_counter()
    meta = build_cot_db(gen, pool, db, attempts=args.attempts, max_new_tokens=args.max_new_tokens,
                        cache_dir=args.out / "cache", progress=False)
    t_db = time.perf_counter() - t0
    c = meta["counts"]
    print(f"CoT database: {c['pool']} pool questions tried, {c['verified']} verified "
          f"({pct(c['verified'] / c['pool'])}%; per attempt {c['verified_by_attempt']}), "
          f"{c['tried']} chains of thought generated, {t_db:.0f} s -> {db}", flush=True)

    knobs = {"k_shots": args.k_shots, "n_samples": args.n_samples, "max_new_tokens": args.max_new_tokens,
             "retry_temperatures": [], "index_dir": args.out / "indexes"}
    correct: dict[str, np.ndarray] = {}
    print(f"medprompt: k={args.k_shots} kNN shots, {args.n_samples} shuffled samples at T=0.7, "
          f"max_new_tokens={args.max_new_tokens}, no retries, on the same {len(questions)} questions")
    for label, extra in [("(a) dataset explanations", {}), ("(b) self-generated CoT DB", {"cot_db": db})]:
        t0 = time.perf_counter()
        results = build_strategy("medprompt", InferConfig(**knobs, **extra)).predict(gen, questions, pool,
                                                                                     progress=False)
        seconds = time.perf_counter() - t0
        ok = np.array([r.letter == q.answer for q, r in zip(questions, results, strict=True)], dtype=np.float64)
        unparsed = sum(len(r.responses) - sum(r.votes.values()) for r in results)
        lo, hi = bootstrap_ci(ok)
        correct[label] = ok
        print(f"  {label}: accuracy {pct(ok.mean())}% (95% CI {pct(lo)}-{pct(hi)}), "
              f"{unparsed} of {len(results) * args.n_samples} samples unparsable, {seconds:.0f} s", flush=True)
    a, b = correct.values()
    lo, hi = bootstrap_ci(b - a)
    print(f"  paired difference (b) - (a): {100 * (b - a).mean():+.1f} points "
          f"(paired bootstrap 95% CI {100 * lo:+.1f} to {100 * hi:+.1f}); "
          f"(b) right where (a) wrong: {int(((b == 1) & (a == 0)).sum())}, the reverse: {int(((a == 1) & (b == 0)).sum())}")
    print(f"total wall time {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
