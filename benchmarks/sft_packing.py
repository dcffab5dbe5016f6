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


class TokenCounter:
    """A forward pre-hook counting the real and the padded tokens the model is actually run on
    (counting at the collator would include the batch the dataloader fetches ahead)."""

    def __init__(self):
        self.real = self.total = 0

    def __call__(self, module, args, kwargs):
        ids, mask = kwargs["input_ids"], kwargs.get("attention_mask")
        if module.training:
            self.total += int(ids.numel())
            self.real += int(mask.sum()) if mask is not None else int(ids.numel())


def run(packing: bool, args: argparse.Namespace, out: str) -> tuple[float, TokenCounter, float]:
    from aloe.train.config import SFTSettings
    from aloe.train.sft import build_datasets, make_trainer

    s = SFTSettings(model=args.model, data=str(args.data), output_dir=out, packing=packing, max_steps=args.steps,
                    batch_size=1 if packing else args.batch_size, max_length=args.max_length, eval_fraction=0.0,
                    save_steps=10_000, logging_steps=10_000, learning_rate=1e-5)
    train_ds, _ = build_datasets(s)
    trainer = make_trainer(s, train_ds, None)
    counter = TokenCounter()
    trainer.model.register_forward_pre_hook(counter, with_kwargs=True)
    t0 = time.perf_counter()
    trainer.train()
    dt = time.perf_counter() - t0
    return counter.real / dt, counter, dt


def parse_args(doc: str, steps: int, batch_help: str, max_length: int) -> argparse.Namespace:
    """The arguments the SFT benchmarks share (sft_speed.py too)."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="embedded:smollm2-135m-instruct")
    p.add_argument("--data", default=DATA, help="Conversation jsonl, e.g. a run's curate/dataset/train.jsonl")
    p.add_argument("--steps", type=int, default=steps)
    p.add_argument("--batch-size", type=int, default=4, help=batch_help)
    p.add_argument("--max-length", type=int, default=max_length, help="tokens per packed bin")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return p.parse_args()


def main() -> None:
    args = parse_args(__doc__, steps=12, batch_help="conversations per unpacked batch", max_length=1024)
    with tempfile.TemporaryDirectory() as tmp:
        unpacked = run(False, args, f"{tmp}/unpacked")
        packed = run(True, args, f"{tmp}/packed")
    for name, (tps, c, dt) in (("unpacked", unpacked), ("packed", packed)):
        print(f"{name:9s} {c.real:6d} real tokens ({c.total - c.real} padding) in {dt:6.1f} s = {tps:6.1f} tokens/s")
    print(f"packed / unpacked throughput: {packed[0] / unpacked[0]:.2f}x")


if __name__ == "__main__":
    main()
