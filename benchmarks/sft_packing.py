"""Packed vs unpacked SFT throughput on the same data and model, in one run.

Both runs train the same model from the same weights on the same conversations for the same number
of optimizer steps; throughput counts real (non-padding) tokens only. The unpacked run pads each
batch of `--batch-size` conversations to its longest; the packed run feeds bins of `--max-length`
tokens (TRL best-fit-decreasing packing, padding-free, block-diagonal attention from position_ids).

    nice -n 10 python benchmarks/sft_packing.py --steps 12
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "src" / "aloe" / "data" / "train" / "sft_medquad.jsonl"


class CountingCollator:
    """Wraps the trainer's collator and counts the real tokens it hands to the model."""

    def __init__(self, inner):
        self.inner, self.tokens = inner, 0

    def __call__(self, features):
        batch = self.inner(features)
        mask = batch.get("attention_mask")
        self.tokens += int(mask.sum()) if mask is not None else int(batch["input_ids"].numel())
        return batch


def run(packing: bool, args: argparse.Namespace, out: str) -> tuple[float, int, float]:
    from aloe.train.config import SFTSettings
    from aloe.train.sft import build_datasets, make_trainer

    s = SFTSettings(model=args.model, data=str(args.data), output_dir=out, packing=packing, max_steps=args.steps,
                    batch_size=1 if packing else args.batch_size, max_length=args.max_length, eval_fraction=0.0,
                    save_steps=10_000, logging_steps=10_000, learning_rate=1e-5)
    train_ds, _ = build_datasets(s)
    trainer = make_trainer(s, train_ds, None)
    counter = CountingCollator(trainer.data_collator)
    trainer.data_collator = counter
    t0 = time.perf_counter()
    trainer.train()
    dt = time.perf_counter() - t0
    return counter.tokens / dt, counter.tokens, dt


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="embedded:smollm2-135m-instruct")
    p.add_argument("--data", default=DATA)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--batch-size", type=int, default=4, help="conversations per unpacked batch")
    p.add_argument("--max-length", type=int, default=1024, help="tokens per packed bin")
    args = p.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    with tempfile.TemporaryDirectory() as tmp:
        unpacked = run(False, args, f"{tmp}/unpacked")
        packed = run(True, args, f"{tmp}/packed")
    for name, (tps, tokens, dt) in (("unpacked", unpacked), ("packed", packed)):
        print(f"{name:9s} {tokens:6d} real tokens in {dt:6.1f} s = {tps:6.1f} tokens/s")
    print(f"packed / unpacked throughput: {packed[0] / unpacked[0]:.2f}x")


if __name__ == "__main__":
    main()
