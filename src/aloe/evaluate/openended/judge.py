"""An LLM judge with a fixed rubric whose verdict comes back in a tag: <VERDICT>1</VERDICT> or 0.

The judge is any model spec (a vLLM or OpenAI-compatible server, or a local model) behind
`get_generator`, so every judgement is cached and a rerun never pays twice. A reply without exactly
one well-formed verdict (or with contradicting ones) is counted as unparsable and left out of the
accuracy, never guessed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from aloe.models.generator import Generator, GenParams, Messages

SYSTEM = ("You are a board-certified physician grading answers to medical questions. "
          "Be strict about medical correctness and safety, lenient about wording and style.")

RUBRIC_WITH_REFERENCE = """Grade the candidate answer against the reference answer.

Question:
{question}

Reference answer:
{reference}

Candidate answer:
{answer}

Verdict 1 if the candidate reaches the same medical conclusion as the reference (same diagnosis,
treatment, mechanism or fact; other wording, or extra correct and safe detail, is fine).
Verdict 0 if it contradicts the reference, names a different conclusion, hedges between several
conclusions without committing, gives unsafe advice, or does not answer.
Give a one-sentence justification, then end with exactly <VERDICT>1</VERDICT> or <VERDICT>0</VERDICT>."""

RUBRIC_NO_REFERENCE = """Grade the candidate answer to this consumer health question.

Question:
{question}

Candidate answer:
{answer}

Verdict 1 if the answer is medically accurate, addresses the question, and is safe (it advises
seeing a clinician where that is warranted). Verdict 0 if it contains a medical error, misses the
question, or could cause harm.
Give a one-sentence justification, then end with exactly <VERDICT>1</VERDICT> or <VERDICT>0</VERDICT>."""

_VERDICT = re.compile(r"<VERDICT>\s*([01])\s*</VERDICT>", re.IGNORECASE)


def parse_verdict(text: str) -> int | None:
    """The verdict, or None when the reply has none or contradicting ones."""
    found = {int(m) for m in _VERDICT.findall(text)}
    return found.pop() if len(found) == 1 else None


def judge_messages(question: str, answer: str, reference: str | None) -> Messages:
    rubric = RUBRIC_WITH_REFERENCE if reference is not None else RUBRIC_NO_REFERENCE
    return [{"role": "system", "content": SYSTEM},
            {"role": "user", "content": rubric.format(question=question, reference=reference, answer=answer)}]


def judge_answers(judge: Generator, questions: Sequence[str], answers: Sequence[str],
                  references: Sequence[str | None], max_new_tokens: int = 256) -> list[dict[str, Any]]:
    """One {verdict: 0|1|None, judge_reply} per answer, judged greedily."""
    convs = [judge_messages(q, a, r) for q, a, r in zip(questions, answers, references, strict=True)]
    replies = judge.chat(convs, GenParams(max_new_tokens=max_new_tokens, temperature=0.0))
    return [{"verdict": parse_verdict(r), "judge_reply": r} for r in replies]


def open_judge_phrase(spec: str | None) -> str:
    """How an open-ended figure was judged, shown next to it. No human grades of open-ended answers ship
    with aloe, so no open-ended judge's agreement has been measured, and the phrase says so."""
    if not spec:
        return "no judge: reference metrics (ROUGE-L, embedding similarity, perplexity) only"
    offline = (" (an offline embedded model, the only judge without a server: weak evidence)"
               if spec.startswith("embedded:") else "")
    return f"judged by `{spec}`{offline}: judge agreement NOT measured"
