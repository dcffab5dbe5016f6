"""Reading a passage corpus and cutting long passages into chunks.

Chunks follow MedRAG: at most ~1,000 characters, split at paragraph, then sentence, then word
boundaries. A chunk keeps its passage's id with `:<n>` appended when the passage needed splitting.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from aloe.io import RecordError, iter_jsonl
from aloe.records import Passage

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def read_passages(path: str | Path) -> Iterator[Passage]:
    """Passages from JSONL (id, text; optional title, source); a bad record names its line and field.

    A repeated id gets `#2`, `#3`, ... appended: the shared corpus reuses 3,335 MedQuAD question
    ids across different documents, and a retriever must tell its passages apart.
    """
    seen: Counter[str] = Counter()
    for lineno, d in iter_jsonl(path):
        for fld in ("id", "text"):
            if not isinstance(d.get(fld), str) or not d[fld].strip():
                raise RecordError(path, lineno, fld, "missing or not a non-empty string")
        seen[d["id"]] += 1
        pid = d["id"] if seen[d["id"]] == 1 else f"{d['id']}#{seen[d['id']]}"
        title = d.get("title")
        yield Passage(id=pid, text=d["text"], source=str(d.get("source") or Path(path).stem),
                      title=title if isinstance(title, str) else None)


def _pieces(text: str, max_chars: int) -> Iterator[str]:
    """Units no longer than max_chars: paragraphs, else sentences, else runs of words."""
    for para in (p.strip() for p in text.split("\n")):
        if not para:
            continue
        if len(para) <= max_chars:
            yield para
            continue
        for sent in _SENTENCE_END.split(para):
            if len(sent) <= max_chars:
                yield sent
                continue
            words, cur = sent.split(), ""
            for w in words:
                if cur and len(cur) + 1 + len(w) > max_chars:
                    yield cur
                    cur = ""
                cur = f"{cur} {w}" if cur else w[:max_chars]
            if cur:
                yield cur


def chunk_text(text: str, max_chars: int = 1000) -> list[str]:
    """Greedy packing of paragraph/sentence units into chunks of at most max_chars."""
    chunks: list[str] = []
    cur = ""
    for piece in _pieces(text, max_chars):
        if cur and len(cur) + 1 + len(piece) > max_chars:
            chunks.append(cur)
            cur = ""
        cur = f"{cur}\n{piece}" if cur else piece
    if cur:
        chunks.append(cur)
    return chunks


def chunk_passages(passages: Iterator[Passage] | list[Passage], max_chars: int = 1000) -> list[Passage]:
    out: list[Passage] = []
    for p in passages:
        if len(p.text) <= max_chars:
            out.append(p)
            continue
        for i, c in enumerate(chunk_text(p.text, max_chars)):
            out.append(Passage(id=f"{p.id}:{i}", text=c, source=p.source, title=p.title))
    return out
