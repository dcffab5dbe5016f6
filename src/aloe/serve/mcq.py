"""Recognising a multiple-choice question in an incoming chat turn.

A user turn is MCQ-like when it ends with at least two lettered options, A first and in order, one
per line ("A. text", "A) text" or "(A) text"), after some question text. An optional leading
"Context: ..." paragraph and "Question:" label (aloe's own prompt layout) are read back into the
MCQ's fields. Anything else is not an MCQ and is passed to the model unchanged.
"""

from __future__ import annotations

import re

from aloe.records import LETTERS, MCQ

_OPTION = re.compile(r"^\s*(?:\(([A-J])\)|([A-J])[.)])\s+(\S.*?)\s*$")
_CONTEXT = re.compile(r"^\s*Context:\s*(.*?)\n\s*Question:\s*(.*)$", re.DOTALL)
_QUESTION = re.compile(r"^\s*Question:\s*", re.IGNORECASE)


def parse_mcq(text: str, qid: str = "request") -> MCQ | None:
    lines = text.rstrip().split("\n")
    options: list[tuple[str, str]] = []
    while lines and (m := _OPTION.match(lines[-1])):
        options.append((m.group(1) or m.group(2), m.group(3)))
        lines.pop()
    options.reverse()
    if len(options) < 2 or [k for k, _ in options] != list(LETTERS[: len(options)]):
        return None
    stem = "\n".join(lines).strip()
    context = None
    if m := _CONTEXT.match(stem):
        context, stem = m.group(1).strip(), m.group(2).strip()
    stem = _QUESTION.sub("", stem).strip()
    if not stem:
        return None
    # The gold answer is unknown; MCQ requires one, and no strategy reads it.
    return MCQ(id=qid, question=stem, options=dict(options), answer="A", source="request", context=context)
