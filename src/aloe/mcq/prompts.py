"""How an MCQ becomes a prompt: one place, so every scoring mode and strategy agrees on it."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Literal

from aloe.models.generator import Messages
from aloe.records import MCQ

Target = Literal["letter", "text"]

COT_INSTRUCTION = (
    "Answer the following multiple-choice question about medicine. Think step by step, then end "
    "with a final line of the form 'Answer: X', where X is the letter of the correct option."
)


def question_block(q: MCQ, options: Mapping[str, str] | None = None) -> str:
    """Context (when there is one), question and lettered options; `options` overrides the order."""
    opts = options if options is not None else q.options
    parts = [f"Context: {q.context}"] if q.context else []
    parts.append(f"Question: {q.question}")
    parts.extend(f"{k}. {v}" for k, v in opts.items())
    return "\n".join(parts)


def answer_text(q: MCQ, target: Target) -> str:
    return q.answer if target == "letter" else q.options[q.answer]


def continuations(q: MCQ, target: Target) -> list[str]:
    """The strings scored after "Answer:", one per option, in option order."""
    return list(q.options) if target == "letter" else list(q.options.values())


def sample_fewshot(pool: Sequence[MCQ], q: MCQ, k: int, seed: int = 1234) -> list[MCQ]:
    """k pool examples, fixed per (seed, question), never the question itself."""
    if k <= 0:
        return []
    candidates = [p for p in pool if p.id != q.id and p.question != q.question]
    if len(candidates) < k:
        raise ValueError(f"few-shot pool has {len(candidates)} usable examples, {k} requested")
    return random.Random(f"{seed}:{q.id}").sample(candidates, k)


def loglik_context(q: MCQ, shots: Sequence[MCQ], target: Target) -> str:
    """Plain-text prompt ending in "Answer:"; each continuation is scored after a space."""
    blocks = [f"{question_block(s)}\nAnswer: {answer_text(s, target)}" for s in shots]
    blocks.append(f"{question_block(q)}\nAnswer:")
    return "\n\n".join(blocks)


def loglik_chat(q: MCQ, shots: Sequence[MCQ], target: Target) -> Messages:
    """The same prompt as chat turns: each shot a user turn answered by an assistant turn."""
    msgs: Messages = []
    for s in shots:
        msgs += [{"role": "user", "content": f"{question_block(s)}\nAnswer:"},
                 {"role": "assistant", "content": answer_text(s, target)}]
    msgs.append({"role": "user", "content": f"{question_block(q)}\nAnswer:"})
    return msgs


def cot_messages(q: MCQ, shots: Sequence[MCQ] = (), options: Mapping[str, str] | None = None,
                 shot_answers: Sequence[str] | None = None) -> Messages:
    """A chain-of-thought conversation; shots answer with their reasoning (or explanation) and letter.

    `shot_answers` supplies worked answers for the shots (e.g. verified chains of thought);
    otherwise a shot's explanation, when it has one, precedes its "Answer: X".
    """
    msgs: Messages = [{"role": "system", "content": COT_INSTRUCTION}]
    for i, s in enumerate(shots):
        if shot_answers is not None:
            worked = shot_answers[i]
        else:
            worked = f"{s.explanation.strip()}\nAnswer: {s.answer}" if s.explanation else f"Answer: {s.answer}"
        msgs += [{"role": "user", "content": question_block(s)}, {"role": "assistant", "content": worked}]
    msgs.append({"role": "user", "content": question_block(q, options)})
    return msgs
