"""The few record types every stage exchanges.

Loaders map each source's quirks (1-based answer indices, Python-dict strings, headerless CSV)
into these once, so no later stage needs to know where a record came from.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

LETTERS = "ABCDEFGHIJ"


@dataclass(slots=True)
class MCQ:
    id: str
    question: str
    options: dict[str, str]
    answer: str
    source: str
    context: str | None = None
    explanation: str | None = None
    subject: str | None = None

    def __post_init__(self) -> None:
        if not self.options:
            raise ValueError("options: empty")
        letters = list(self.options)
        if letters != list(LETTERS[: len(letters)]):
            raise ValueError(f"options: letters must be A, B, ... in order, got {letters}")
        if self.answer not in self.options:
            raise ValueError(f"answer: {self.answer!r} is not one of the options {letters}")

    @property
    def gold_index(self) -> int:
        return list(self.options).index(self.answer)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MCQ:
        return cls(**{k: d.get(k) for k in cls.__slots__ if k in d})  # type: ignore[arg-type]


@dataclass(slots=True)
class Conversation:
    id: str
    messages: list[dict[str, str]]
    source: str
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Conversation:
        return cls(id=d["id"], messages=d["messages"], source=d["source"], meta=d.get("meta") or {})


@dataclass(slots=True)
class Preference:
    id: str
    prompt: list[dict[str, str]]
    chosen: str
    rejected: str
    source: str
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preference:
        return cls(
            id=d["id"], prompt=d["prompt"], chosen=d["chosen"], rejected=d["rejected"],
            source=d["source"], meta=d.get("meta") or {},
        )


@dataclass(slots=True)
class Passage:
    id: str
    text: str
    source: str
    title: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}
