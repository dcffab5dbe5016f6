"""Extracting the chosen option from a free-text answer.

An answer that cannot be read is returned as None and counted as unparsable by the caller; it is
never silently mapped to a letter.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

# The keywords match in any case, the letter only in upper case: "the answer is a rash" is prose.
_FINAL = re.compile(
    r"(?i:final\s+answer|answer|correct\s+(?:option|answer|choice)|option|choice)\s*(?i:is|:|=|-)?\s*"
    r"(?i:option\s*)?[\(\[\*]*\s*([A-J])\s*[\)\]\*]*(?![\w])"
)
_LEADING = re.compile(r"^\s*[\(\[\*]*([A-J])[\)\]\*]*\s*(?:[.:)\-]|$)")
_LONE = re.compile(r"^\s*[\(\[\*]*([A-J])[\)\]\*]*\s*[.:]?\s*$", re.MULTILINE)


def extract_answer(text: str, options: Mapping[str, str]) -> str | None:
    """The option letter a response settles on, or None.

    In order: the last "Answer: X" (or "the correct option is (X)", "final answer is X"); a line
    holding only a letter; a response that starts with "X." / "(X)"; finally a response that quotes
    exactly one option's full text. Letters outside the question's options are ignored.
    """
    if not text:
        return None
    valid = set(options)
    for pattern in (_FINAL, _LONE):
        found = [m.group(1) for m in pattern.finditer(text) if m.group(1) in valid]
        if found:
            return found[-1]
    if (m := _LEADING.match(text)) and m.group(1) in valid:
        return m.group(1)
    low = text.lower()
    quoted = [k for k, v in options.items() if len(v) > 2 and v.lower() in low]
    if len(quoted) == 1:
        return quoted[0]
    return None
