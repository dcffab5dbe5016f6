"""DPO on a CPU: TRL 1.16's fused LM head as shipped vs aloe's `cpu_lm_head`, in one run.

Both runs train the embedded model from the same weights on the same preference pairs, in the same
order, for the same number of steps, with TRL's DPOTrainer; only the LM head differs. TRL's head
projects every position (prompt and padding too) through the vocabulary on devices without
Triton, folding each tile with elementwise passes written for a GPU kernel; `cpu_lm_head` projects
only the completion positions with one matmul and a log-softmax. The per-step losses must agree:
the head computes the same log-probabilities.

    python benchmarks/dpo_lm_head.py --steps 8
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from dataclasses import replace

from aloe.models.spec import DEFAULT_MODEL


def run(patched: bool, args: argparse.Namespace, out: str) -> tuple[float, list[float]]:
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import DPOConfig, DPOTrainer

    from aloe.models.loading import resolve_weights
    from aloe.train.align import fit_prompt, length_grouped
    from aloe.train.common import load_model_for_training, trainer_args
    from aloe.train.config import AlignSettings
    from aloe.train.data import load_preferences, to_dpo_row
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
    with cpu_lm_head(model.device) if patched else contextlib.nullcontext():
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
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d1, tempfile.TemporaryDirectory() as d2:
        t_trl, l_trl = run(False, args, d1)
        t_aloe, l_aloe = run(True, args, d2)
    print(f"DPO, {args.steps} steps of {args.batch_size} pairs from {args.pairs}, {args.model}")
    print(f"  TRL fused LM head (stock)   {t_trl:7.1f} s  {t_trl / args.steps:5.2f} s/step")
    print(f"  aloe cpu_lm_head            {t_aloe:7.1f} s  {t_aloe / args.steps:5.2f} s/step")
    gap = max((abs(a - b) for a, b in zip(l_trl, l_aloe, strict=True)), default=0.0)
    print(f"  per-step losses: max difference {gap:.2e} over {len(l_trl)} steps")
    print(f"  speed-up: {t_trl / t_aloe:.2f}x")


if __name__ == "__main__":
    main()
