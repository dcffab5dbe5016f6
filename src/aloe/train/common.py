"""What SFT and DPO share: loading the model to train, LoRA/QLoRA, trainer arguments, resuming,
and saving a plain checkpoint (LoRA merged in) under a completion marker."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

from aloe.train.config import TrainCommon

log = logging.getLogger(__name__)

COMPLETE_MARKER = "aloe-train-complete.json"
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def is_complete(final_dir: str | Path) -> bool:
    return (Path(final_dir) / COMPLETE_MARKER).is_file()


def set_chat_template(tokenizer: Any, model: Any, template: str | None) -> None:
    """Keep the model's template unless one is asked for; a model without one (a base model) gets
    ChatML, whose <|im_start|>/<|im_end|> are added as special tokens if the vocabulary lacks them."""
    if template is None and tokenizer.chat_template:
        return
    if template in (None, "chatml"):
        missing = [t for t in ("<|im_start|>", "<|im_end|>") if t not in tokenizer.get_vocab()]
        if missing:
            tokenizer.add_special_tokens({"additional_special_tokens": missing})
            model.resize_token_embeddings(len(tokenizer))
        tokenizer.chat_template = CHATML
        tokenizer.eos_token = "<|im_end|>"
        model.config.eos_token_id = tokenizer.eos_token_id
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.eos_token_id = tokenizer.eos_token_id
    elif template.endswith(".jinja") and Path(template).is_file():
        tokenizer.chat_template = Path(template).read_text(encoding="utf-8")
    else:
        tokenizer.chat_template = template


def load_model_for_training(s: TrainCommon) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from aloe.models.loading import resolve_weights

    where = resolve_weights(s.model)
    # `auto` keeps fp32 master weights: AdamW updates too small for bf16's 8-bit mantissa still land
    kwargs: dict[str, Any] = {"dtype": torch.bfloat16 if s.bf16 is True else torch.float32, "use_safetensors": True}
    if s.method == "qlora":
        if not torch.cuda.is_available():
            raise ValueError("method qlora needs a CUDA GPU (4-bit bitsandbytes kernels); use method lora on CPU")
        if importlib.util.find_spec("bitsandbytes") is None:
            raise ValueError("method qlora needs bitsandbytes: pip install bitsandbytes")
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16)
    tokenizer = AutoTokenizer.from_pretrained(where)
    model = AutoModelForCausalLM.from_pretrained(where, **kwargs)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def peft_config(s: TrainCommon) -> Any:
    if s.method == "full":
        return None
    from peft import LoraConfig

    return LoraConfig(r=s.lora.r, lora_alpha=s.lora.alpha, lora_dropout=s.lora.dropout,
                      target_modules=s.lora.target_modules, task_type="CAUSAL_LM")


def train_bf16(s: TrainCommon) -> bool:
    """`s.bf16`, with `auto` resolved for the device the trainer will run on."""
    if s.bf16 != "auto":
        return s.bf16
    import torch

    from aloe.models.precision import resolve_precision

    # DPO too: its loss no longer collapses under CPU bf16 autocast once the weights are spread over
    # their bf16 cells (spread_in_bf16_cells, which aloe.train.align applies)
    return resolve_precision("auto", s.device or ("cuda" if torch.cuda.is_available() else "cpu")) == "bf16"


def spread_in_bf16_cells(model: Any, seed: int) -> None:
    """Move each fp32 nn.Linear weight to a seeded uniform place inside its bf16 rounding cell, for
    full fine-tuning under bf16 autocast over fp32 weights.

    What autocast computes with, the weights rounded to bf16, does not change. What changes is how
    that bf16 copy follows the fp32 weights: spread over its cell, a weight's copy steps to the next
    bf16 value with a probability proportional to the update, so on average it moves as the fp32
    weight does. Weights from a dequantised checkpoint are not spread: 8.1% of the embedded SmolLM2's
    (a Q4_1 GGUF) sit exactly on a bf16 rounding tie and 20.7% exactly on a bf16 value. Every tie
    steps a whole bf16 unit at the first update however small, all in the update's direction: one
    DPO step at lr 1e-6 moved the bf16 policy's log-ratio to its reference by ~20 nats (fp32: ~1),
    the sigmoid loss fell to 0.016 and its gradient vanished. Weights exactly on bf16 values do the
    opposite and stall until their updates add up to half a unit (benchmarks/precision_speed.py).

    The fp32 weights move by less than half a bf16 unit (2^-9 relative): the rounding that bf16
    autocast applies in every forward anyway.
    """
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            w = module.weight if isinstance(module, torch.nn.Linear) else None
            if w is None or w.dtype != torch.float32:
                continue
            held = w.bfloat16()
            up = torch.nextafter(held, torch.full_like(held, float("inf"))).float()
            down = torch.nextafter(held, torch.full_like(held, float("-inf"))).float()
            lo, hi = (held.float() + down) / 2, (held.float() + up) / 2
            # off the cell's edges, where a tie could round either way
            u = torch.rand(w.shape, generator=gen).clamp_(1e-3, 1 - 1e-3).to(w.device)
            w.copy_(lo + u * (hi - lo))


def precision_record(trainer: Any) -> dict[str, Any]:
    """What a run computed in and on what hardware, so a speed or loss can be read against it."""
    args, device = trainer.args, trainer.model.device
    record: dict[str, Any] = {"device": str(device), "compute": "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32",
                              "weights": str(next(trainer.model.parameters()).dtype).removeprefix("torch.")}
    if device.type == "cpu":
        from aloe.models.precision import cpu_info

        record["cpu"] = cpu_info()
    elif device.type == "cuda":
        import torch

        record["gpu"] = torch.cuda.get_device_name(device)
    return record


def trainer_args(s: TrainCommon, **overrides: Any) -> dict[str, Any]:
    """Arguments common to SFTConfig and DPOConfig. Checkpoints go to <output_dir>/checkpoints."""
    import torch

    bf16 = train_bf16(s)
    args = dict(
        output_dir=str(Path(s.output_dir) / "checkpoints"),
        # eval holds no gradients, so it can take bigger batches than training (packed bins of 1 x
        # max_length tokens are often trained at batch size 1)
        per_device_train_batch_size=s.batch_size, per_device_eval_batch_size=max(s.batch_size, 4),
        gradient_accumulation_steps=s.grad_accum, learning_rate=s.learning_rate,
        num_train_epochs=s.epochs, max_steps=s.max_steps, warmup_steps=s.warmup_ratio,
        # transformers refuses bf16 without a bf16 GPU unless told the run is on the CPU (then
        # accelerate autocasts on the CPU)
        bf16=bf16, fp16=s.fp16, use_cpu=s.device == "cpu" or (bf16 and not torch.cuda.is_available()),
        gradient_checkpointing=s.gradient_checkpointing,
        save_strategy="steps", save_steps=s.save_steps, save_total_limit=s.save_total_limit,
        logging_steps=s.logging_steps, report_to=s.report_to or "none", seed=s.seed,
        max_length=s.max_length, disable_tqdm=False, dataloader_pin_memory=torch.cuda.is_available(),
    )
    args.update(overrides)
    return args


_CHECKPOINT = re.compile(r"checkpoint-(\d+)")  # transformers' own pattern: `.incomplete` folders never match
# Full or LoRA weights, whole or sharded; FSDP writes pytorch_model_fsdp* instead
_WEIGHTS = {"model.safetensors", "model.safetensors.index.json", "adapter_model.safetensors", "adapter_model.bin",
            "pytorch_model.bin", "pytorch_model.bin.index.json"}


def _saved_step(state_file: Path) -> int | None:
    try:
        return int(json.loads(state_file.read_text(encoding="utf-8"))["global_step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def checkpoint_missing(ckpt: Path, step: int) -> list[str]:
    """What `checkpoint-<step>` lacks to be resumed from; empty when complete.

    Trainer._save_checkpoint writes the weights, then the optimizer and scheduler state, then
    trainer_state.json last, none of them atomically: a kill mid-save leaves a folder that
    `get_last_checkpoint` would still pick, and the Trainer then fails on it ("Can't find a valid
    checkpoint") or, without optimizer.pt/scheduler.pt, silently resumes with a fresh optimizer.
    """
    try:
        names = {p.name for p in ckpt.iterdir()}
    except FileNotFoundError:  # moved aside by the main process of a distributed run meanwhile
        return ["the folder"]
    # DeepSpeed keeps weights, optimizer and scheduler together in global_step<N>/
    deepspeed = any(n.startswith("global_step") for n in names)
    weights = bool(names & _WEIGHTS) or any(n.startswith("pytorch_model_fsdp") for n in names)
    checks = (
        ("model weights", deepspeed or weights),
        ("optimizer state", deepspeed or any(n.startswith("optimizer") for n in names)),  # .pt, .bin, optimizer_0/
        ("scheduler.pt", deepspeed or "scheduler.pt" in names),
        (f"trainer_state.json at step {step}", _saved_step(ckpt / "trainer_state.json") == step),
    )
    return [what for what, present in checks if not present]


def last_checkpoint(output_dir: str | Path) -> str | None:
    """The newest complete checkpoint under <output_dir>/checkpoints (None: start from scratch).

    Newer incomplete ones, saves cut short by a kill, are skipped with a warning and moved aside to
    `checkpoint-N.incomplete`, so that the resumed run's own save of step N starts in an empty folder;
    the Trainer's `save_total_limit` rotation later deletes them like any older checkpoint.
    """
    ckpts = Path(output_dir) / "checkpoints"
    found = sorted(((int(m.group(1)), p) for p in ckpts.glob("checkpoint-*")
                    if p.is_dir() and (m := _CHECKPOINT.fullmatch(p.name))), reverse=True)
    for step, path in found:
        missing = checkpoint_missing(path, step)
        if not missing:
            return str(path)
        aside = path.with_name(f"{path.name}.incomplete")
        log.warning("%s is incomplete (no %s): a save cut short; skipped and moved aside to %s", path,
                    ", ".join(missing), aside.name)
        # every rank of a distributed run looks; only the main one moves, the others merely skip it
        if os.environ.get("RANK", "0") == "0":
            shutil.rmtree(aside, ignore_errors=True)
            os.replace(path, aside)
    return None


def save_final(trainer: Any, final_dir: str | Path, metrics: dict[str, Any]) -> Path:
    """A plain safetensors checkpoint (LoRA weights merged in), written atomically, then the marker.

    Adds `precision` (precision_record) to `metrics`, so the stage's metrics.json written after
    this carries it as well as the marker.

    Distributed runs (DeepSpeed ZeRO-3, FSDP) go through `trainer.save_model`, which gathers the
    sharded weights; LoRA adapters are then merged on the main process.
    """
    metrics["precision"] = precision_record(trainer)
    final = Path(final_dir)
    tmp = final.with_name(f".{final.name}.tmp")
    acc = trainer.accelerator
    if acc.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    acc.wait_for_everyone()
    if acc.num_processes > 1 or trainer.is_deepspeed_enabled or trainer.is_fsdp_enabled:
        trainer.save_model(str(tmp))
        if acc.is_main_process and (tmp / "adapter_config.json").is_file():
            from peft import AutoPeftModelForCausalLM

            merged = AutoPeftModelForCausalLM.from_pretrained(tmp).merge_and_unload()
            for f in tmp.glob("adapter_*"):
                f.unlink()
            merged.save_pretrained(tmp, safe_serialization=True)
    elif acc.is_main_process:
        model = trainer.model
        if hasattr(model, "merge_and_unload"):
            model = model.merge_and_unload()
        model.save_pretrained(tmp, safe_serialization=True)
    if acc.is_main_process:
        trainer.processing_class.save_pretrained(tmp)
        (tmp / COMPLETE_MARKER).write_text(json.dumps({"finished": time.time(), **metrics}, indent=2))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    acc.wait_for_everyone()
    return final
