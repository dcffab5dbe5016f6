"""Cleaning: text rules that change an item, then rules that drop it; each counted per source.

Text rules run on every turn of a chat and every field of an MCQ (question, options, explanation);
an item counts once per rule that changed any of its texts.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from aloe.curate.config import CleanConfig
from aloe.curate.items import Item, Step

_URL = re.compile(r"(?:https?://|www\.)[^\s<>()\[\]\"']+", re.IGNORECASE)
_EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+\.[\w.-]+\b")
_TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9]*(?:\s[^<>]*)?/?>")
_ENTITY = re.compile(r"&(?:nbsp|amp|lt|gt|quot|#39);")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u200b\ufeff]")
_SPACES = re.compile(r"[ \t\u00a0]+")
_BLANK_LINES = re.compile(r"\n\s*\n\s*\n+")
_ENTITIES = {"&nbsp;": " ", "&amp;": "&", "&lt;": "<", "&gt;": ">", "&quot;": '"', "&#39;": "'"}

# Answers that carry no answer: placeholders, and upstream notices that the text was removed.
_NON_ANSWER = re.compile(
    r"^\W*(?:n/?a|none|null|nil|no answer|not available|todo|tbd|unknown)?\W*$"
    r"|summary section (?:is|has) not (?:yet )?(?:been )?(?:available|written)"
    r"|^this (?:section|page) (?:is )?(?:currently )?(?:under construction|not available)",
    re.IGNORECASE)


def _rules(cfg: CleanConfig) -> list[tuple[str, Callable[[str], str]]]:
    rules: list[tuple[str, Callable[[str], str]]] = [
        ("control_chars", lambda t: _CONTROL.sub("", t)),
        ("markup", lambda t: _ENTITY.sub(lambda m: _ENTITIES[m.group(0)], _TAG.sub(" ", t))),
    ]
    if cfg.strip_urls:
        rules.append(("urls", lambda t: _URL.sub("", t)))
    if cfg.strip_emails:
        rules.append(("emails", lambda t: _EMAIL.sub("", t)))
    rules.append(("whitespace", lambda t: _BLANK_LINES.sub("\n\n", "\n".join(
        _SPACES.sub(" ", line).strip() for line in t.split("\n"))).strip()))
    return rules


class Clean(Step):
    name = "clean"

    def __init__(self, cfg: CleanConfig):
        super().__init__()
        self.cfg = cfg
        self.rules = _rules(cfg)

    def _clean_text(self, text: str, changed: set[str]) -> str:
        for rule, fn in self.rules:
            new = fn(text)
            if new != text:
                changed.add(rule)
                text = new
        return text

    def _why_drop(self, item: Item) -> str | None:
        cfg = self.cfg
        total = len(item.text)
        if total > cfg.max_chars:
            return "too_long"
        if item.mcq is not None:
            if len(item.mcq.question) < cfg.min_chars:
                return "too_short"
            if any(not o for o in item.mcq.options.values()):
                return "empty_turn"
            return None
        msgs = item.messages or []
        if not any(m["role"] == "assistant" for m in msgs) or not any(m["role"] == "user" for m in msgs):
            return "empty_turn"
        if any(not m["content"] for m in msgs if m["role"] != "system"):
            return "empty_turn"
        if any(len(m["content"]) < cfg.min_chars for m in msgs if m["role"] != "system"):
            return "too_short"
        answers = [m["content"] for m in msgs if m["role"] == "assistant"]
        users = {m["content"].lower() for m in msgs if m["role"] == "user"}
        if any(_NON_ANSWER.search(a) or len(a.split()) < cfg.min_answer_words or a.lower() in users for a in answers):
            return "non_answer"
        return None

    def run(self, items: list[Item]) -> list[Item]:
        out = []
        for item in items:
            changed: set[str] = set()
            if item.mcq is not None:
                m = item.mcq
                m.question = self._clean_text(m.question, changed)
                m.options = {k: self._clean_text(v, changed) for k, v in m.options.items()}
                if m.explanation:
                    m.explanation = self._clean_text(m.explanation, changed) or None
                if m.context:
                    m.context = self._clean_text(m.context, changed) or None
            else:
                item.messages = [{"role": msg["role"], "content": self._clean_text(msg["content"], changed)}
                                 for msg in item.messages or []]
            for rule in changed:
                self.stats.change(item, rule)
            why = self._why_drop(item)
            if why:
                self.stats.drop(item, why)
            else:
                out.append(item)
        return out
