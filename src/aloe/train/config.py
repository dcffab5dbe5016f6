"""Typed configs for `aloe sft` and `aloe align`: a YAML file, or a recipe's `sft:` / `align:` section."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    """Unknown keys are errors: a misspelt setting must not be silently ignored."""

    model_config = ConfigDict(extra="forbid")


class LoraSettings(_Strict):
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] | str = "all-linear"


class TrainCommon(_Strict):
    """Settings shared by SFT and DPO. `bf16` and `gradient_checkpointing` default to off because
    TRL 1.16 turns both on by default, which is slow or fails on CPU; turn them on for GPUs."""

    model: str = "embedded:smollm2-135m-instruct"
    output_dir: str
    method: Literal["full", "lora", "qlora"] = "full"
    lora: LoraSettings = Field(default_factory=LoraSettings)
    learning_rate: float = 2e-5
    epochs: float = 1.0
    max_steps: int = -1
    batch_size: int = 4
    grad_accum: int = 1
    max_length: int = 1024
    warmup_ratio: float = 0.0
    # auto: bf16 autocast over fp32 weights where the device computes bf16 natively (AMX / AVX-512
    # BF16 CPUs, bf16 GPUs: 2.3x per SFT step on a 2-core Xeon), fp32 elsewhere (emulated bf16 is
    # ~4x slower); true also loads the weights in bf16
    bf16: bool | Literal["auto"] = False
    fp16: bool = False  # fp16 mixed precision over fp32 weights, for GPUs without bf16
    # cpu, cuda, cuda:N or mps; None: the trainer's choice (a CUDA GPU when there is one). A recipe
    # run sets it (and bf16/fp16) from its device and precision unless the section does.
    device: str | None = Field(None, pattern=r"^(cpu|mps|cuda(:\d+)?)$")
    gradient_checkpointing: bool = False
    save_steps: int = 50
    save_total_limit: int | None = 2
    logging_steps: int = 10
    report_to: list[str] = Field(default_factory=list)  # e.g. ["tensorboard"], ["wandb"]
    seed: int = 42
    accelerate_config: str | None = None  # a packaged name (ddp, fsdp, zero3: aloe/configs/accelerate/) or a path


class SFTSettings(TrainCommon):
    data: str  # jsonl / jsonl.gz of Conversation records, a folder of them, or a `datasets` save_to_disk folder
    eval_data: str | None = None
    eval_fraction: float = 0.1  # held out from `data` when no eval_data is given
    max_eval_examples: int | None = None  # a seeded sample of the held-out conversations, when there are more
    packing: bool = True
    # attention kernel; default with packing: aloe's `sdpa_varlen` (per-sample causal SDPA, any
    # device); `flash_attention_2` on GPUs with flash-attn installed
    attn_implementation: str | None = None
    system_prompt: str | None = None  # prepended to conversations that have no system turn
    chat_template: str | None = None  # "chatml", a .jinja path or a template; default: the model's own, else ChatML


class AlignStage(_Strict):
    data: str  # Preference jsonl
    beta: float = 0.1
    learning_rate: float = 5e-6
    loss_type: str = "sigmoid"  # any of TRL DPOConfig's loss types: sigmoid, ipo, hinge, robust, ...
    epochs: float = 1.0
    max_steps: int = -1
    exclude_sources: list[str] = Field(default_factory=list)  # sources held out of training (for evaluation)


class AlignSettings(TrainCommon):
    stages: list[AlignStage]
    eval_fraction: float = 0.15  # of each stage's pairs, held out to measure preference accuracy and margin
    precompute_ref_log_probs: bool = False  # reference log-probs computed once, so no reference copy in memory
    # prompts rendered longer than this (long jailbreak templates) lose the middle of their longest
    # user turn, so the completion is never truncated away; null: no cap (then `max_length` cuts the end)
    max_prompt_length: int | None = None
    # batches of pairs of similar length, in a seeded random order: far less padding than random
    # batches when prompt lengths vary by 30x (red-team styles), the same pairs per epoch
    group_by_length: bool = True
    # chosen and rejected run as one row over one copy of their common prompt (aloe.train.shared_prompt):
    # the same loss and gradients on ~40% fewer tokens for red-team pairs; needs sdpa or eager attention
    share_prompt: bool = True
    refusal_eval: str | None = None  # held-out harmful prompts (HarmfulPrompt jsonl) for the refusal rate
    refusal_eval_n: int = 60
    refusal_max_new_tokens: int = 64
