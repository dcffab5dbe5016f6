"""The unit every curation step passes along: a chat or an MCQ, tagged with its source and group.

MCQs stay structured until the templates step, so decontamination and CoT synthesis can read the
question, options and gold answer; everything else is already a list of chat messages.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from aloe.records import MCQ


@dataclass(slots=True)
class Item:
    id: str
    source: str
    group: str
    messages: list[dict[str, str]] | None = None
    mcq: MCQ | None = None
    cot: bool = False
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if (self.messages is None) == (self.mcq is None):
            raise ValueError(f"item {self.id}: exactly one of messages / mcq must be set")

    @property
    def text(self) -> str:
        """The content compared by dedup and decontamination (no role names, no letters)."""
        if self.mcq is not None:
            return "\n".join([self.mcq.question, *self.mcq.options.values()])
        # system prompts are constant per source: they would make every item of a source look alike
        return "\n".join(m["content"] for m in self.messages or [] if m["role"] != "system")

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "source": self.source, "group": self.group, "cot": self.cot, "meta": self.meta,
                "messages": self.messages, "mcq": self.mcq.to_dict() if self.mcq else None}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Item:
        return cls(id=d["id"], source=d["source"], group=d["group"], cot=d.get("cot", False), meta=d.get("meta") or {},
                   messages=d.get("messages"), mcq=MCQ.from_dict(d["mcq"]) if d.get("mcq") else None)


class StepStats:
    """Per-source counts of one step: items in, out, and what each rule dropped or changed."""

    def __init__(self, name: str):
        self.name = name
        self.inp: Counter[str] = Counter()
        self.out: Counter[str] = Counter()
        self.dropped: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self.changed: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self.added: Counter[str] = Counter()

    def drop(self, item: Item, rule: str) -> None:
        self.dropped[rule][item.source] += 1

    def change(self, item: Item, rule: str) -> None:
        self.changed[rule][item.source] += 1

    def to_dict(self) -> dict[str, Any]:
        return {"in": dict(self.inp), "out": dict(self.out), "added": dict(self.added),
                "dropped": {r: dict(c) for r, c in self.dropped.items()},
                "changed": {r: dict(c) for r, c in self.changed.items()}}

    def check_balance(self) -> None:
        """in + added - dropped == out, for every source; a step that loses items silently is a bug."""
        sources = set(self.inp) | set(self.out) | set(self.added)
        for s in sources:
            dropped = sum(c[s] for c in self.dropped.values())
            if self.inp[s] + self.added[s] - dropped != self.out[s]:
                raise AssertionError(f"step {self.name}, source {s}: in {self.inp[s]} + added {self.added[s]} "
                                     f"- dropped {dropped} != out {self.out[s]}")


class Step:
    """One curation step: `run` over all items, returning the survivors; counts go to `self.stats`."""

    name = "step"

    def __init__(self) -> None:
        self.stats = StepStats(self.name)

    def __call__(self, items: list[Item]) -> list[Item]:
        self.stats.inp.update(i.source for i in items)
        out = self.run(items)
        self.stats.out.update(i.source for i in out)
        self.stats.check_balance()
        return out

    def run(self, items: list[Item]) -> list[Item]:
        raise NotImplementedError
