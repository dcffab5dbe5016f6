"""Relaxed perplexity of a reference answer given its question: aloe's approximation of HPAI's metric.

HPAI-BSC propose "Relaxed Perplexity" in Arias-Duart et al., "Automatic Evaluation of Healthcare LLMs
Beyond Question-Answering" (NAACL 2025 short papers, arXiv 2502.06666), to score open-ended answers
for factuality. Its exact formula could not be checked here: the stored copies of the paper
(arxiv.org/html/2502.06666v1, ACL Anthology 2025.naacl-short.10) give only the abstract and the task
table, and HPAI's own lm-eval task `careqa_open_perplexity` (lm_eval/tasks/careqa) is *plain*
perplexity (word/byte perplexity, bits per byte of the reference alone, via loglikelihood_rolling,
no question), not the relaxed one. So what follows is aloe's definition, documented as such.

Perplexity here is conditional: only the reference answer's tokens are scored, given the question
prompt (lm-eval's (context, continuation) scoring), so a long question does not dilute the figure:

    ppl(prompt, answer) = exp(-log p(answer | prompt) / n_answer_tokens)

"Relaxed" takes the best (lowest) figure over several ways the model could have reached the
answer: a few prompt wordings, and lead-ins taken from the model's own answer (its first
sentences), so a model that would state the reference after a sentence of preamble is not punished
for the preamble. The strict figure (first variant, no lead-in) is reported beside it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from aloe.evaluate.openended.datasets import OpenQA

INSTRUCTION = "Answer the following medical question."

# name -> (lm, question) -> context; the continuation is the reference answer.
PROMPT_VARIANTS: dict[str, Callable[[Any, str], str]] = {
    "chat": lambda lm, q: lm.apply_chat_template([{"role": "user", "content": f"{INSTRUCTION}\n\n{q}"}]),
    "plain": lambda lm, q: f"Question: {q}\nAnswer:",
}


def lead_ins(answer: str, max_sentences: int = 2) -> list[str]:
    """The model's answer cut after each of its first sentences (each ends with a space)."""
    ends = [m.end() for m in re.finditer(r"[.!?](\s+|$)", answer)][:max_sentences]
    return [answer[:e].rstrip() + " " for e in ends if answer[e:].strip()]


def relaxed_perplexity(lm: Any, items: Sequence[OpenQA], variants: Sequence[str] = ("chat", "plain"),
                       own_answers: Mapping[str, str] | None = None, max_lead_ins: int = 2,
                       progress: bool = True) -> dict[str, dict[str, Any]]:
    """For each item with a reference: {perplexity (strict), relaxed_perplexity, n_tokens, best}."""
    variants = [v for v in variants if v != "chat" or lm.has_chat_template]
    unknown = [v for v in variants if v not in PROMPT_VARIANTS]
    if unknown or not variants:
        raise ValueError(f"prompt variants {unknown or variants!r}: expected some of {', '.join(PROMPT_VARIANTS)}")
    requests: list[tuple[str, str]] = []
    labels: list[tuple[str, str]] = []  # (item id, how the context was built)
    for it in items:
        if it.reference is None:
            continue
        for v in variants:
            base = PROMPT_VARIANTS[v](lm, it.question)
            # Plain prompts end in "Answer:", so the answer starts with a space, as in lm-eval.
            sep = "" if v == "chat" else " "
            requests.append((base, sep + it.reference))
            labels.append((it.id, v))
            for k, lead in enumerate(lead_ins((own_answers or {}).get(it.id, ""), max_lead_ins)):
                requests.append((base + sep + lead, it.reference))
                labels.append((it.id, f"{v}+lead{k + 1}"))
    scores = lm.loglikelihood(requests, progress=progress, desc="relaxed perplexity")
    n_tokens = [len(cont) for _, cont in lm._encode_pairs(requests)]
    out: dict[str, dict[str, Any]] = {}
    for (item_id, how), (logprob, _), n in zip(labels, scores, n_tokens, strict=True):
        ppl = math.exp(-logprob / n)
        rec = out.setdefault(item_id, {"perplexity": ppl, "n_tokens": n, "relaxed_perplexity": ppl, "best": how})
        if ppl < rec["relaxed_perplexity"]:
            rec.update(relaxed_perplexity=ppl, best=how)
    return out
