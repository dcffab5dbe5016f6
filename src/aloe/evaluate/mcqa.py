"""Multiple-choice scoring: log-likelihood (lm-eval's way) and generative chain-of-thought."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from aloe.mcq.answers import extract_answer
from aloe.mcq.prompts import (
    Target,
    continuations,
    cot_messages,
    loglik_chat,
    loglik_context,
    sample_fewshot,
)
from aloe.models.generator import GenParams, Generator
from aloe.records import MCQ

Mode = Literal["loglik", "generate"]


@dataclass(frozen=True)
class MCQASettings:
    mode: Mode = "loglik"
    target: Target = "letter"  # loglik: score the option letters or the option texts
    shots: int = 0
    chat: bool = False  # wrap the prompt in the model's chat template
    seed: int = 1234
    max_new_tokens: int = 384

    def describe(self) -> dict[str, Any]:
        d: dict[str, Any] = {"mode": self.mode, "shots": self.shots, "chat": self.chat, "seed": self.seed}
        if self.mode == "loglik":
            d["target"] = self.target
        else:
            d["max_new_tokens"] = self.max_new_tokens
        return d


def loglik_requests(q: MCQ, shots: Sequence[MCQ], s: MCQASettings, lm: Any) -> list[tuple[str, str]]:
    """One (context, continuation) per option.

    Plain prompts score " X" after "Answer:" as lm-eval does; with a chat template the assistant
    turn is open and the option is scored as its first words.
    """
    conts = continuations(q, s.target)
    if s.chat:
        ctx = lm.apply_chat_template(loglik_chat(q, shots, s.target))
        return [(ctx, c) for c in conts]
    ctx = loglik_context(q, shots, s.target)
    return [(ctx, " " + c) for c in conts]


def score_loglik(lm: Any, questions: Sequence[MCQ], pool: Sequence[MCQ], s: MCQASettings,
                 progress: bool = True, desc: str = "loglikelihood") -> list[dict[str, Any]]:
    requests: list[tuple[str, str]] = []
    spans = []
    for q in questions:
        reqs = loglik_requests(q, sample_fewshot(pool, q, s.shots, s.seed), s, lm)
        spans.append((len(requests), len(reqs)))
        requests += reqs
    results = lm.loglikelihood(requests, progress=progress, desc=desc)
    preds = []
    for q, (start, n) in zip(questions, spans, strict=True):
        lls = np.array([results[start + i][0] for i in range(n)])
        letters = list(q.options)
        # lm-eval's acc_norm: log-likelihood per character of the scored choice
        lengths = np.array([len(c) for c in continuations(q, s.target)], dtype=np.float64)
        pred, pred_norm = letters[int(lls.argmax())], letters[int((lls / lengths).argmax())]
        preds.append({"id": q.id, "gold": q.answer, "pred": pred, "correct": pred == q.answer,
                      "pred_norm": pred_norm, "correct_norm": pred_norm == q.answer,
                      "loglik": [round(float(x), 5) for x in lls]})
    return preds


def score_generate(gen: Generator, questions: Sequence[MCQ], pool: Sequence[MCQ], s: MCQASettings) -> list[dict[str, Any]]:
    conversations = [cot_messages(q, sample_fewshot(pool, q, s.shots, s.seed)) for q in questions]
    responses = gen.chat(conversations, GenParams(max_new_tokens=s.max_new_tokens, temperature=0.0, seed=s.seed))
    preds = []
    for q, text in zip(questions, responses, strict=True):
        letter = extract_answer(text, q.options)
        preds.append({"id": q.id, "gold": q.answer, "pred": letter, "parsed": letter is not None,
                      "correct": letter == q.answer, "response": text})
    return preds
