"""Supervised fine-tuning on Conversation records with TRL's SFTTrainer.

Loss covers the final assistant turn only (prompt/completion rows, see `to_prompt_completion`).
Packing uses TRL's best-fit-decreasing packing, which is padding-free: a batch is one row of
concatenated samples whose `position_ids` restart at 0 for each sample, with the sample boundaries
(`cu_seq_lens_q`) and no attention mask. The default attention for packed runs, `sdpa_varlen`
(`varlen_attention.py`), attends each sample's slice separately; flash attention's varlen kernels
do the same on GPUs; plain `sdpa`/`eager` get a block-diagonal mask derived from the position_ids.
Either way samples never attend to each other; `tests/train/test_packing.py` checks exactly that.

A run writes checkpoints under <output_dir>/checkpoints, resumes from the last one when restarted,
and finishes with <output_dir>/final: a plain safetensors checkpoint (LoRA merged in) plus
metrics (validation loss before and after).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from aloe.io import read_json, write_json
from aloe.train.common import (
    is_complete, last_checkpoint, load_model_for_training, peft_config, save_final, set_chat_template, trainer_args,
)
from aloe.train import varlen_attention
from aloe.train.config import SFTSettings
from aloe.train.data import load_conversations, split_holdout, to_prompt_completion
from aloe.train.metrics import SFTMetrics
from aloe.train.trl_cpu import cpu_lm_head

log = logging.getLogger(__name__)


def build_datasets(s: SFTSettings) -> tuple[Any, Any]:
    from datasets import Dataset

    convs = load_conversations(s.data)
    if s.eval_data:
        train, held = convs, load_conversations(s.eval_data)
    else:
        train, held = split_holdout(convs, s.eval_fraction, s.seed)
    if s.max_eval_examples is not None and len(held) > s.max_eval_examples:
        # the validation loss is computed before and after training: on a CPU, thousands of
        # held-out conversations cost more than the training steps; a seeded subset keeps it comparable
        import random

        held = random.Random(s.seed).sample(held, s.max_eval_examples)
    def rows(cs: list[Any]) -> Any:
        return Dataset.from_list([to_prompt_completion(c, s.system_prompt) for c in cs])

    return rows(train), (rows(held) if held else None)


def make_trainer(s: SFTSettings, train_ds: Any, eval_ds: Any) -> Any:
    from trl import SFTConfig, SFTTrainer

    model, tokenizer = load_model_for_training(s)
    attn = s.attn_implementation or (varlen_attention.register() if s.packing else None)
    if attn:
        model.set_attn_implementation(attn)
    set_chat_template(tokenizer, model, s.chat_template)
    # Validation loss is measured unpacked (padded batches), the same way before and after.
    cfg = SFTConfig(**trainer_args(s, packing=s.packing, eval_packing=False, completion_only_loss=True))
    return SFTTrainer(model=model, args=cfg, train_dataset=train_ds, eval_dataset=eval_ds,
                      processing_class=tokenizer, peft_config=peft_config(s))


def run_sft(s: SFTSettings) -> dict[str, Any]:
    """Train per `s`; returns metrics. A completed run (final/ with its marker) is not redone."""
    out = Path(s.output_dir)
    final = out / "final"
    if is_complete(final):
        log.warning("sft already complete in %s", final)
        return read_json(out / "metrics.json")
    train_ds, eval_ds = build_datasets(s)
    trainer = make_trainer(s, train_ds, eval_ds)
    resume = last_checkpoint(out)
    metrics: dict[str, Any] = {"train_examples": len(train_ds), "eval_examples": len(eval_ds) if eval_ds else 0}
    before_path = out / "eval_before.json"
    # SFTTrainer scores through the same fused LM head as DPOTrainer (log-probs, entropy, top-1):
    # on a CPU its GPU-shaped tile loop was ~40% of a SmolLM2 step (benchmarks/sft_speed.py)
    with cpu_lm_head(trainer.model.device):
        if eval_ds is not None:
            # Measured once, before the first step; a resumed run reads it back instead of re-measuring a
            # partly trained model.
            if before_path.is_file():
                metrics["eval_loss_before"] = read_json(before_path)["eval_loss"]
            else:
                metrics["eval_loss_before"] = trainer.evaluate()["eval_loss"]
                write_json(before_path, {"eval_loss": metrics["eval_loss_before"]})
        result = trainer.train(resume_from_checkpoint=resume)
        metrics.update({"resumed_from": resume, "train_loss": result.training_loss, "steps": result.global_step,
                        "train_runtime_s": result.metrics.get("train_runtime")})
        if eval_ds is not None:
            metrics["eval_loss_after"] = trainer.evaluate()["eval_loss"]
    save_final(trainer, final, metrics)
    SFTMetrics.model_validate(metrics).write(out / "metrics.json")
    return metrics
