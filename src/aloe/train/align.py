"""DPO alignment in stages with TRL's DPOTrainer: stage 1 (medical + general + safety pairs), then
stage 2 (red-team pairs from `aloe redteam pairs`), each starting from the previous stage's output.

Per stage: pairs whose source starts with one of `exclude_sources` are left out (kept for
evaluation); a seeded fraction of the rest is held out. On the held-out pairs, before and after
training, the stage reports preference accuracy (the model gives the chosen response a higher
log-probability than the rejected one; also per token, which does not favour the shorter response),
the mean log-probability margin, and the DPO reward margin and reward accuracy,
beta * (margin_after - margin_before) against the stage's starting model, which is DPO's reference.
DPO moves the reward margin much more readily than the policy's own ranking of the two responses
(Chen et al. 2024, "Preference learning algorithms do not learn preference rankings"), so all are shown.
With `refusal_eval`, the refusal rate of the starting model and the final model on held-out harmful
prompts is measured by the same judge (`aloe.safety.verdicts.RefusalJudge`).

Each stage writes <output_dir>/stage<k>/checkpoints (resumed from when restarted) and
<output_dir>/stage<k>/final (a plain checkpoint, LoRA merged in) under a completion marker.
"""

from __future__ import annotations

import copy
import gc
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any

from aloe.io import read_json, write_json, write_jsonl
from aloe.records import Preference
from aloe.train.common import (
    is_complete, last_checkpoint, load_model_for_training, peft_config, save_final, spread_in_bf16_cells,
    train_bf16, trainer_args,
)
from aloe.train.config import AlignSettings, AlignStage
from aloe.train.data import load_preferences, split_holdout, to_dpo_row
from aloe.train.metrics import DPOMetrics, DPOStageMetrics
from aloe.train.shared_prompt import shared_prompt_pairs
from aloe.train.trl_cpu import cpu_lm_head


def response_logprobs(model: Any, tokenizer: Any, pairs: list[Preference],
                      batch_size: int = 8) -> list[tuple[float, float, int, int]]:
    """(log p(chosen | prompt), log p(rejected | prompt), chosen tokens, rejected tokens) per pair,
    each response ending with the chat template's end of turn."""
    from aloe.models.hf import HFCausalLM

    def split(prompt: list[dict[str, str]], response: str) -> tuple[str, str]:
        ctx = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        whole = tokenizer.apply_chat_template([*prompt, {"role": "assistant", "content": response}], tokenize=False)
        if not whole.startswith(ctx):
            raise ValueError("the chat template renders the prompt differently once a response follows it")
        return ctx, whole[len(ctx):]

    lm = HFCausalLM(model.eval(), tokenizer, batch_size=batch_size)
    reqs = [split(p.prompt, r) for p in pairs for r in (p.chosen, p.rejected)]
    scores = [lp for lp, _ in lm.loglikelihood(reqs, desc="preference log-probs")]
    sizes = [len(tokenizer(cont, add_special_tokens=False)["input_ids"]) for _, cont in reqs]
    return [(scores[2 * i], scores[2 * i + 1], sizes[2 * i], sizes[2 * i + 1]) for i in range(len(pairs))]


def preference_metrics(logps: list[tuple[float, float, int, int]],
                       ref: list[tuple[float, float, int, int]] | None = None, beta: float = 0.1) -> dict[str, float]:
    n = max(1, len(logps))
    margins = [c - r for c, r, _, _ in logps]
    out = {"pairs": len(margins), "preference_accuracy": sum(m > 0 for m in margins) / n,
           "preference_accuracy_per_token": sum(c / nc > r / nr for c, r, nc, nr in logps) / n,
           "logp_margin": sum(margins) / n}
    if ref is not None:
        rewards = [beta * (m - (x[0] - x[1])) for m, x in zip(margins, ref, strict=True)]
        out["reward_margin"] = sum(rewards) / n
        out["reward_accuracy"] = sum(x > 0 for x in rewards) / n
    return out


def fit_prompt(prompt: list[dict[str, str]], tokenizer: Any, max_tokens: int) -> list[dict[str, str]]:
    """The prompt, with the middle of its longest user turn cut out (marked […]) until the rendered
    prompt has at most `max_tokens` tokens. Jailbreak templates put their framing at the start and the
    request at the end, so a third of the kept tokens come from the head and two thirds from the tail."""
    def size(msgs: list[dict[str, str]]) -> int:
        text = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    msgs = [dict(m) for m in prompt]
    users = [i for i, m in enumerate(msgs) if m["role"] == "user"]
    for _ in range(4):  # decoding and re-encoding a cut can merge tokens at the seam: retry on the rest
        excess = size(msgs) - max_tokens
        if excess <= 0 or not users:
            return msgs
        longest = max(users, key=lambda i: len(msgs[i]["content"]))
        ids = tokenizer(msgs[longest]["content"], add_special_tokens=False)["input_ids"]
        keep = len(ids) - excess - 4  # the marker's tokens
        if keep < 8:
            break
        head = keep // 3
        msgs[longest]["content"] = (tokenizer.decode(ids[:head]) + " […] "
                                    + tokenizer.decode(ids[len(ids) - (keep - head):]))
    return msgs


def length_grouped(pairs: list[Preference], tokenizer: Any, batch: int, seed: int) -> list[Preference]:
    """The pairs ordered for sequential sampling: consecutive runs of `batch` pairs of similar length
    (prompt plus the longer response), the runs in a seeded random order."""
    import random

    def size(p: Preference) -> int:
        text = tokenizer.apply_chat_template(
            [*p.prompt, {"role": "assistant", "content": max(p.chosen, p.rejected, key=len)}], tokenize=False)
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    ranked = sorted(pairs, key=size)
    runs = [ranked[i:i + batch] for i in range(0, len(ranked), batch)]
    random.Random(seed).shuffle(runs)
    return [p for run in runs for p in run]


def refusal_rate(model_dir: str, prompts_path: str, n: int, max_new_tokens: int, batch_size: int) -> dict[str, Any]:
    from aloe.models.generator import GenParams
    from aloe.models.backends import get_generator
    from aloe.safety.verdicts import RefusalJudge
    from aloe.safety.prompts import load_prompts_jsonl, sample_per_source

    prompts = sample_per_source(load_prompts_jsonl(prompts_path), n)
    # No completion cache: the key is the model's path, and a retrained stage reuses its path.
    gen = get_generator(model_dir, batch_size=batch_size)
    responses = gen.chat([[{"role": "user", "content": p.prompt}] for p in prompts], GenParams(max_new_tokens=max_new_tokens))
    verdicts = RefusalJudge().judge_many([p.prompt for p in prompts], responses)
    refused = sum(v.unsafe is False for v in verdicts)
    return {"prompts": len(prompts), "refused": refused, "refusal_rate": refused / max(1, len(prompts)),
            "judge": "refusal (aloe.safety.verdicts.RefusalJudge)"}


def _stage_pairs(st: AlignStage, s: AlignSettings, stage_dir: Path) -> tuple[list[Preference], list[Preference]]:
    prefs = load_preferences(st.data)
    kept = [p for p in prefs if not any(p.source.startswith(x) for x in st.exclude_sources)]
    if not kept:
        raise ValueError(f"{st.data}: no pairs left after exclude_sources {st.exclude_sources}")
    train, held = split_holdout(kept, s.eval_fraction, s.seed)
    write_jsonl(stage_dir / "heldout.jsonl", (p.to_dict() for p in held))
    return train, held


def run_stage(k: int, st: AlignStage, s: AlignSettings, start_model: str) -> dict[str, Any]:
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    stage_dir = Path(s.output_dir) / f"stage{k}"
    if is_complete(stage_dir / "final"):
        return read_json(stage_dir / "metrics.json")
    train, held = _stage_pairs(st, s, stage_dir)
    stage_settings = s.model_copy(update={"model": start_model, "output_dir": str(stage_dir),
                                          "learning_rate": st.learning_rate, "epochs": st.epochs,
                                          "max_steps": st.max_steps})
    model, tokenizer = load_model_for_training(stage_settings)
    full = stage_settings.method == "full"
    if full and train_bf16(stage_settings):
        # before anything measures the start model: it is DPO's reference, and that must be these weights
        spread_in_bf16_cells(model, s.seed)
    metrics: dict[str, Any] = {"stage": k, "start_model": start_model, "train_pairs": len(train),
                               "heldout_pairs": len(held), "beta": st.beta, "loss_type": st.loss_type}
    before_path = stage_dir / "heldout_logps_before.json"
    if held:
        if before_path.is_file():  # a resumed run must not re-measure a partly trained model
            ref = [tuple(x) for x in read_json(before_path)]
            if any(len(x) != 4 for x in ref):
                raise ValueError(f"{before_path}: written by an older aloe (no token counts); remove "
                                 f"{stage_dir} to rerun this stage")
        else:
            ref = response_logprobs(model, tokenizer, held, s.batch_size)
            write_json(before_path, ref)
        metrics["heldout_before"] = preference_metrics(ref)
    if s.max_prompt_length:
        train = [replace(p, prompt=fit_prompt(p.prompt, tokenizer, s.max_prompt_length)) for p in train]
    sampling = "random"
    if s.group_by_length:
        train, sampling = length_grouped(train, tokenizer, s.batch_size, s.seed), "sequential"
    cfg = DPOConfig(**trainer_args(stage_settings, beta=st.beta, loss_type=[st.loss_type],
                                   precompute_ref_log_probs=s.precompute_ref_log_probs,
                                   train_sampling_strategy=sampling))
    resume = last_checkpoint(stage_dir)
    with cpu_lm_head(model.device), (shared_prompt_pairs(model) if s.share_prompt else nullcontext()):
        # The reference is a copy of the policy as it starts, not TRL's second read of the folder: the
        # same weights (spread included), one load fewer. LoRA and precomputed log-probs need none.
        reference = copy.deepcopy(model) if full and not s.precompute_ref_log_probs else None
        trainer = DPOTrainer(model=model, ref_model=reference, args=cfg,
                             train_dataset=Dataset.from_list([to_dpo_row(p) for p in train]),
                             processing_class=tokenizer, peft_config=peft_config(stage_settings))
        result = trainer.train(resume_from_checkpoint=resume)
    metrics.update({"resumed_from": resume, "steps": result.global_step, "train_loss": result.training_loss,
                    "train_runtime_s": result.metrics.get("train_runtime")})
    if held:
        metrics["heldout_after"] = preference_metrics(
            response_logprobs(trainer.model, tokenizer, held, s.batch_size), ref, st.beta)
    save_final(trainer, stage_dir / "final", metrics)
    DPOStageMetrics.model_validate(metrics).write(stage_dir / "metrics.json")
    return metrics


def run_align(s: AlignSettings) -> dict[str, Any]:
    """Run the stages in order; returns per-stage metrics and, with `refusal_eval`, refusal rates."""
    if not s.stages:
        raise ValueError("align: stages is empty")
    from aloe.models.loading import resolve_weights

    current = resolve_weights(s.model) if s.model.startswith("embedded:") else s.model
    out: dict[str, Any] = {"stages": []}
    for k, st in enumerate(s.stages, 1):
        out["stages"].append(run_stage(k, st, s, current))
        gc.collect()  # the finished stage's trainer holds reference cycles; free it before the next loads
        current = str(Path(s.output_dir) / f"stage{k}" / "final")
    if s.refusal_eval:
        path = Path(s.output_dir) / "refusal_eval.json"
        if path.is_file() and read_json(path).get("final_model") == current:
            out["refusal"] = read_json(path)
        else:
            args = (s.refusal_eval, s.refusal_eval_n, s.refusal_max_new_tokens, s.batch_size)
            start = resolve_weights(s.model)
            out["refusal"] = {"start_model": start, "final_model": current,
                              "before": refusal_rate(start, *args), "after": refusal_rate(current, *args)}
            write_json(path, out["refusal"])
    DPOMetrics.model_validate(out).write(Path(s.output_dir) / "metrics.json")
    return out
