"""DPO on a CPU: TRL 1.16's DPOTrainer as shipped vs aloe's two rewrites, in one run.

All runs train the embedded model from the same weights on the same preference pairs, in the same
order, for the same number of steps, with TRL's DPOTrainer:

- TRL as shipped: on devices without Triton its fused LM head projects every position (prompt and
  padding too) through the vocabulary, folding each tile with elementwise passes written for a GPU;
- + `aloe.train.trl_cpu.cpu_lm_head`: only the completion positions, one matmul and a log-softmax;
- + `aloe.train.shared_prompt.shared_prompt_pairs`: chosen and rejected in one row over one copy of
  their prompt (what `aloe align` runs).

The per-step losses must agree: each rewrite computes the same log-probabilities.

    python benchmarks/dpo_speed.py --pairs runs/demo/redteam/pairs.jsonl --steps 8
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from dataclasses import replace

from aloe.models.spec import DEFAULT_MODEL


VARIANTS = {"stock": "TRL as shipped", "lm_head": "+ cpu_lm_head", "shared": "+ cpu_lm_head + shared prompt"}


def run(variant: str, args: argparse.Namespace, out: str) -> tuple[float, list[float]]:
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import DPOConfig, DPOTrainer

    from aloe.models.loading import resolve_weights
    from aloe.train.align import fit_prompt, length_grouped
    from aloe.train.common import load_model_for_training, trainer_args
    from aloe.train.config import AlignSettings
    from aloe.train.data import load_preferences, to_dpo_row
    from aloe.train.shared_prompt import shared_prompt_pairs
    from aloe.train.trl_cpu import cpu_lm_head

    model = resolve_weights(args.model) if args.model.startswith("embedded:") else args.model
    s = AlignSettings(model=model, output_dir=out, batch_size=args.batch_size, max_length=args.max_length,
                      save_steps=10_000, max_steps=args.steps, logging_steps=1, stages=[{"data": args.pairs}])
    model, tok = load_model_for_training(s)
    pairs = [replace(p, prompt=fit_prompt(p.prompt, tok, args.max_prompt_length)) for p in load_preferences(args.pairs)]
    pairs = length_grouped(pairs, tok, args.batch_size, seed=0)
    losses: list[float] = []

    class Losses(TrainerCallback):
        def on_log(self, _args, _state, _control, logs=None, **kw):
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))

    cfg = DPOConfig(**trainer_args(s, beta=0.1, loss_type=["sigmoid"], train_sampling_strategy="sequential"))
    head = cpu_lm_head(model.device) if variant != "stock" else contextlib.nullcontext()
    with head, shared_prompt_pairs(model) if variant == "shared" else contextlib.nullcontext():
        trainer = DPOTrainer(model=model, args=cfg, train_dataset=Dataset.from_list([to_dpo_row(p) for p in pairs]),
                             processing_class=tok, callbacks=[Losses()])
        t0 = time.perf_counter()
        trainer.train()
        return time.perf_counter() - t0, losses


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--pairs", required=True, help="Preference jsonl, e.g. a run's preferences/stage1.jsonl")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--max-length", type=int, default=384)
    ap.add_argument("--max-prompt-length", type=int, default=192)
    ap.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    args = ap.parse_args()
    results = {}
    for v in args.variants:
        with tempfile.TemporaryDirectory() as d:
            results[v] = run(v, args, d)
    print(f"DPO, {args.steps} steps of {args.batch_size} pairs from {args.pairs}, {args.model}")
    t0, l0 = results[args.variants[0]]
    for v, (t, losses) in results.items():
        gap = max((abs(a - b) for a, b in zip(l0, losses, strict=True)), default=0.0)
        print(f"  {VARIANTS[v]:32s} {t:7.1f} s  {t / args.steps:5.2f} s/step  speed-up {t0 / t:4.2f}x  "
              f"max loss difference {gap:.1e}")


if __name__ == "__main__":
    main()
