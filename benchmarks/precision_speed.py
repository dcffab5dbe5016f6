"""fp32 vs bf16 on a CPU, side by side in one run, on the four kinds of work the demo does.

- SFT step: 4 rows x 384 tokens, AdamW over fp32 master weights; bf16 is `torch.autocast` (what
  TrainingArguments(bf16=True) makes accelerate do on a CPU);
- DPO step: chosen and rejected of 4 pairs (prompt + completion, 384 tokens) through the policy
  with backward, and through a frozen reference under no_grad; same autocast, over weights spread
  in their bf16 cells as `aloe align` does (aloe.train.common.spread_in_bf16_cells); a third run
  without the spread shows the loss collapse it prevents;
- generation: 16 chat prompts, 48 new tokens, greedy, through aloe's HFCausalLM.generate, with the weights
  cast to bf16 (inference needs no fp32 master copy);
- scoring: MCQA log-likelihood (0-shot, option letters, as `aloe eval` runs it) on packaged
  benchmark questions, weights cast to bf16.

Both precisions start from the same weights and see the same data, so the training losses and the
generated and predicted answers can be compared directly. Threads stay at torch's default.

    python benchmarks/precision_speed.py --questions 600
    python benchmarks/precision_speed.py --parts dpo --steps 5
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
import torch.nn.functional as F

from aloe.models.spec import DEFAULT_MODEL

PRECISIONS = ("fp32", "bf16")
PARTS = ("sft", "dpo", "gen", "score")


def autocast(precision: str) -> AbstractContextManager[Any]:
    return torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else nullcontext()


def text_rows(tok: Any, questions: Sequence[Any], rows: int, length: int) -> torch.Tensor:
    """`rows` x `length` token ids cut from benchmark questions laid end to end: real text, so the
    losses mean something, and the same ids for both precisions."""
    ids: list[int] = []
    for q in questions:
        opts = " ".join(f"{k}. {v}" for k, v in q.options.items())
        ids += tok(f"{q.question}\n{opts}\nAnswer: {q.answer}\n\n", add_special_tokens=False)["input_ids"]
        if len(ids) >= rows * length:
            break
    if len(ids) < rows * length:
        raise ValueError(f"the questions hold {len(ids)} tokens; {rows * length} are needed")
    return torch.tensor(ids[:rows * length]).view(rows, length)


def timed_steps(step: Callable[[], float], warmup: int, steps: int) -> tuple[float, list[float]]:
    """(median seconds per step after warm-up, every step's loss, warm-up included)."""
    losses, times = [], []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        losses.append(step())
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return statistics.median(times), losses


def sft_step(model: Any, batch: torch.Tensor, precision: str) -> Callable[[], float]:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)

    def step() -> float:
        with autocast(precision):
            loss = model(input_ids=batch, labels=batch, use_cache=False).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()
    return step


def completion_logps(model: Any, ids: torch.Tensor, prompt_len: int) -> torch.Tensor:
    """Sum of the completion tokens' log-probabilities, per row, computed in fp32 as TRL does."""
    logits = model(input_ids=ids, use_cache=False, logits_to_keep=ids.shape[1] - prompt_len + 1).logits[:, :-1]
    logps = torch.log_softmax(logits.float(), dim=-1)
    return logps.gather(-1, ids[:, prompt_len:, None]).squeeze(-1).sum(-1)


def dpo_step(policy: Any, reference: Any, chosen: torch.Tensor, rejected: torch.Tensor, prompt_len: int,
             precision: str, beta: float = 0.1) -> Callable[[], float]:
    opt = torch.optim.AdamW(policy.parameters(), lr=1e-6)
    both = torch.cat([chosen, rejected])
    n = chosen.shape[0]

    def step() -> float:
        with autocast(precision):
            with torch.no_grad():
                ref = completion_logps(reference, both, prompt_len)
            pol = completion_logps(policy, both, prompt_len)
        margin = (pol[:n] - ref[:n]) - (pol[n:] - ref[n:])
        loss = -F.logsigmoid(beta * margin).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()
    return step


def bench_dpo(base: Any, chosen: torch.Tensor, rejected: torch.Tensor, prompt_len: int, precision: str, spread: bool,
              warmup: int, steps: int) -> tuple[tuple[float, list[float]], float]:
    """Timed DPO steps from `base`, and the margin learnt, measured in fp32. With `spread`, policy and
    reference start from the weights spread in their bf16 cells, as `aloe align` trains under autocast."""
    from aloe.train.common import spread_in_bf16_cells

    start = copy.deepcopy(base)
    if spread:
        spread_in_bf16_cells(start, seed=0)
    policy, reference = start.train(), copy.deepcopy(start).eval().requires_grad_(False)
    timed = timed_steps(dpo_step(policy, reference, chosen, rejected, prompt_len, precision), warmup, steps)
    return timed, fp32_margin(policy, reference, chosen, rejected, prompt_len)


def agreement(fp32: list[float], other: list[float]) -> str:
    diffs = [o - f for f, o in zip(fp32, other, strict=True)]
    worst = max(range(len(diffs)), key=lambda i: abs(diffs[i]))
    return (f"diff step 0 {diffs[0]:+.2e}, max |diff| {abs(diffs[worst]):.2e} (step {worst}), "
            f"mean |diff| {sum(map(abs, diffs)) / len(diffs):.2e}")


@torch.no_grad()
def fp32_margin(policy: Any, reference: Any, chosen: torch.Tensor, rejected: torch.Tensor, prompt_len: int) -> float:
    """Mean chosen-minus-rejected log-ratio of the trained policy, measured in fp32 whatever it was
    trained in: under bf16 autocast the log-ratio of two nearly equal models is dominated by which
    weights happen to round differently, so the training loss alone does not show what was learned."""
    both = torch.cat([chosen, rejected])
    ratio = completion_logps(policy, both, prompt_len) - completion_logps(reference, both, prompt_len)
    n = chosen.shape[0]
    return float((ratio[:n] - ratio[n:]).mean())


class TokenCounter:
    """A RowHook that keeps each row's generated tokens, to count them and compare precisions."""

    def __init__(self) -> None:
        self.tokens: dict[int, list[int]] = {}

    def step(self, index: int, tokens: Sequence[int]) -> bool:
        return True

    def end(self, index: int, text: str, tokens: Sequence[int], reason: str) -> None:
        self.tokens[index] = list(tokens)


def bench_generation(model: Any, tok: Any, chats: list[list[dict[str, str]]],
                     new_tokens: int) -> tuple[float, dict[int, list[int]]]:
    from aloe.models.generator import GenParams
    from aloe.models.hf import HFCausalLM

    lm = HFCausalLM(model, tok, batch_size=len(chats))
    prompts = [lm.apply_chat_template(c) for c in chats]  # what HFGenerator.chat does, minus its progress bar
    lm.generate(prompts[:2], GenParams(max_new_tokens=4), progress=False)  # warm-up: first calls pick kernels
    counter = TokenCounter()
    t0 = time.perf_counter()
    lm.generate(prompts, GenParams(max_new_tokens=new_tokens, temperature=0.0), progress=False, hook=counter)
    return time.perf_counter() - t0, counter.tokens


def bench_scoring(model: Any, tok: Any, questions: list[Any]) -> tuple[float, list[dict[str, Any]]]:
    from aloe.evaluate.mcqa import MCQASettings, score_loglik
    from aloe.models.hf import HFCausalLM

    lm = HFCausalLM(model, tok, batch_size=8)
    s = MCQASettings()
    score_loglik(lm, questions[:8], [], s, progress=False)  # warm-up
    t0 = time.perf_counter()
    preds = score_loglik(lm, questions, [], s, progress=False)
    return time.perf_counter() - t0, preds


def packaged_questions(n: int) -> list[Any]:
    """`n` questions taken in turn from every packaged benchmark, so all six formats are in."""
    from aloe.mcq.benchmarks import BENCHMARKS, load_split

    splits = [load_split(b) for b in BENCHMARKS.values()]
    out = []
    for i in range(max(map(len, splits))):
        out += [s[i] for s in splits if i < len(s)]
    if len(out) < n:
        raise ValueError(f"only {len(out)} packaged questions; asked for {n}")
    return out[:n]


def row(name: str, unit: str, fp32: float, bf16: float, extra: str = "") -> str:
    return f"{name:22s} {fp32:10.1f} {bf16:10.1f} {bf16 / fp32:6.2f}x  {unit:12s} {extra}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--rows", type=int, default=4, help="SFT rows and DPO pairs per step")
    ap.add_argument("--length", type=int, default=384, help="tokens per SFT row and per DPO sequence")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--steps", type=int, default=4, help="timed training steps per precision")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--new-tokens", type=int, default=48)
    ap.add_argument("--questions", type=int, default=600)
    ap.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS), help="which work to time")
    args = ap.parse_args()

    from aloe.models.loading import load_causal_lm
    from aloe.models.precision import cpu_info, resolve_precision

    info = cpu_info()
    print(f"CPU: {info['model']}")
    print(f"torch {torch.__version__}, CPU capability {info['torch_capability']}, threads {torch.get_num_threads()}")
    print(f"flags: {' '.join(info['flags']) or '(none of the listed)'}; bf16 capable: {info['bf16_capable']}; "
          f"precision 'auto' resolves to {resolve_precision('auto')}")
    print(f"model: {args.model}", flush=True)

    base, tok = load_causal_lm(args.model)
    questions = packaged_questions(args.questions)
    results: dict[str, dict[str, Any]] = {p: {} for p in PRECISIONS}
    prompt_len = args.length // 2
    sft_batch = text_rows(tok, questions, args.rows, args.length)
    # Chosen and rejected share each pair's prompt and differ in the completion, as in DPO data.
    dpo_text = text_rows(tok, questions[::-1], 3 * args.rows, prompt_len)
    prompts_ids = dpo_text[:args.rows]
    chosen = torch.cat([prompts_ids, dpo_text[args.rows:2 * args.rows, :args.length - prompt_len]], dim=1)
    rejected = torch.cat([prompts_ids, dpo_text[2 * args.rows:, :args.length - prompt_len]], dim=1)
    chats = [[{"role": "user", "content": q.question}] for q in questions[:args.prompts]]

    parts = set(args.parts)
    for p in PRECISIONS:
        if "sft" in parts:
            print(f"[{p}] SFT steps", flush=True)
            model = copy.deepcopy(base).train()
            results[p]["sft"] = timed_steps(sft_step(model, sft_batch, p), args.warmup, args.steps)
            del model
        if "dpo" in parts:
            print(f"[{p}] DPO steps", flush=True)
            results[p]["dpo"], results[p]["margin"] = bench_dpo(base, chosen, rejected, prompt_len, p, p == "bf16",
                                                                args.warmup, args.steps)
        # Inference needs no fp32 master weights: bf16 casts them, as `--dtype bf16` loading would.
        infer = base if p == "fp32" or not parts & {"gen", "score"} else copy.deepcopy(base).to(torch.bfloat16)
        if "gen" in parts:
            print(f"[{p}] generation", flush=True)
            results[p]["gen"] = bench_generation(infer, tok, chats, args.new_tokens)
        if "score" in parts:
            print(f"[{p}] scoring {len(questions)} questions", flush=True)
            results[p]["score"] = bench_scoring(infer, tok, questions)
    if "dpo" in parts:
        print("[bf16, weights not spread] DPO steps", flush=True)
        results["unspread"] = dict(zip(("dpo", "margin"), bench_dpo(base, chosen, rejected, prompt_len, "bf16", False,
                                                                    args.warmup, args.steps), strict=True))

    f, b = results["fp32"], results["bf16"]
    sft_tokens, dpo_tokens = args.rows * args.length, 2 * args.rows * args.length
    print(f"\nmedian of {args.steps} steps after {args.warmup} warm-up; loss diff: bf16 - fp32, "
          f"step 0 (same weights) and the largest over all {args.warmup + args.steps} steps")
    print(f"{'':22s} {'fp32':>10s} {'bf16':>10s} {'ratio':>7s}  {'unit':12s}")
    for key, name, tokens in (("sft", f"SFT step {args.rows}x{args.length}", sft_tokens),
                              ("dpo", f"DPO step {args.rows} pairs", dpo_tokens)):
        if key not in parts:
            continue
        (tf, lf), (tb, lb) = f[key], b[key]
        print(row(name, "tok/s", tokens / tf, tokens / tb, f"loss {lf[0]:.4f} vs {lb[0]:.4f}; {agreement(lf, lb)}; "
                                                           f"s/step {tf:.2f} vs {tb:.2f}"))
        print(f"{'':22s} losses fp32 {' '.join(f'{x:.4f}' for x in lf)} | bf16 {' '.join(f'{x:.4f}' for x in lb)}")
        if key == "dpo":
            u = results["unspread"]
            lu = u["dpo"][1]
            print(f"{'':22s} bf16 over weights not spread in their bf16 cells: losses {' '.join(f'{x:.4f}' for x in lu)}; "
                  f"{agreement(lf, lu)}")
            print(f"{'':22s} after the steps, mean margin measured in fp32: {f['margin']:.3f} vs {b['margin']:.3f} "
                  f"(not spread: {u['margin']:.3f})")
    if "gen" in parts:
        (tf, gf), (tb, gb) = f["gen"], b["gen"]
        same = sum(gf[i] == gb[i] for i in gf)
        print(row(f"generate {args.prompts}x{args.new_tokens}", "new tok/s", sum(map(len, gf.values())) / tf,
                  sum(map(len, gb.values())) / tb, f"{same}/{len(gf)} outputs identical; s {tf:.1f} vs {tb:.1f}"))
    if "score" in parts:
        (tf, pf), (tb, pb) = f["score"], b["score"]
        agree = sum(x["pred"] == y["pred"] for x, y in zip(pf, pb, strict=True))
        acc_f, acc_b = (sum(x["correct"] for x in ps) / len(ps) for ps in (pf, pb))
        print(row(f"score {len(questions)} MCQ", "questions/s", len(pf) / tf, len(pb) / tb,
                  f"letters agree {agree}/{len(pf)}; accuracy {acc_f:.3f} vs {acc_b:.3f}; s {tf:.1f} vs {tb:.1f}"))


if __name__ == "__main__":
    main()
