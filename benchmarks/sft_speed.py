"""SFT on a CPU: TRL 1.16's SFTTrainer as shipped vs with `aloe.train.trl_cpu.cpu_lm_head`, in one run.

SFTTrainer computes its loss (and the entropy and token accuracy it logs) through TRL's fused LM
head. On devices without Triton that head projects every position through the vocabulary and folds
each tile with elementwise passes written for a GPU kernel; `cpu_lm_head` (what `aloe sft` runs)
projects only the labelled positions with one matmul and a log-softmax. Both runs train the same
weights on the same packed rows in the same order; their per-step losses must agree.

    python benchmarks/sft_speed.py --data runs/demo/curate/dataset/train.jsonl --steps 4
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time

from sft_packing import parse_args  # benchmarks/ is on sys.path when this script runs


def run(fused_on_cpu: bool, args: argparse.Namespace, out: str) -> tuple[float, list[float]]:
    from transformers import TrainerCallback

    from aloe.train.config import SFTSettings
    from aloe.train.sft import build_datasets, make_trainer
    from aloe.train.trl_cpu import cpu_lm_head

    s = SFTSettings(model=args.model, data=str(args.data), output_dir=out, max_steps=args.steps,
                    batch_size=args.batch_size, max_length=args.max_length, eval_fraction=0.0,
                    save_steps=10_000, logging_steps=1, learning_rate=3e-5)
    train_ds, _ = build_datasets(s)
    losses: list[float] = []

    class Losses(TrainerCallback):
        def on_log(self, _args, _state, _control, logs=None, **kw):
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))

    trainer = make_trainer(s, train_ds, None)
    trainer.add_callback(Losses())
    with contextlib.nullcontext() if fused_on_cpu else cpu_lm_head(trainer.model.device):
        t0 = time.perf_counter()
        trainer.train()
        return time.perf_counter() - t0, losses


def main() -> None:
    args = parse_args(__doc__, steps=4, batch_help="packed rows per step", max_length=384)
    with tempfile.TemporaryDirectory() as tmp:
        stock = run(True, args, f"{tmp}/stock")
        ours = run(False, args, f"{tmp}/ours")
    print(f"SFT, {args.steps} steps of {args.batch_size} x {args.max_length} packed tokens from {args.data}, {args.model}")
    gap = max(abs(a - b) for a, b in zip(stock[1], ours[1], strict=True))
    for name, (t, _) in (("TRL as shipped", stock), ("+ cpu_lm_head (aloe sft)", ours)):
        print(f"  {name:26s} {t:7.1f} s  {t / args.steps:5.2f} s/step")
    print(f"  speed-up {stock[0] / ours[0]:.2f}x, max per-step loss difference {gap:.1e}")


if __name__ == "__main__":
    main()
