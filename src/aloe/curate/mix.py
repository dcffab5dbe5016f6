"""Mixing by source group and the train/validation split.

Groups: `medical` (curated medical QA, MCQ and dialogue), `cot` (verified teacher chains) and
`general` (general-domain instruction data). The ratios are targets for a total that defaults to
what the medical group supports (all medical items kept); a group short of its target contributes
everything it has, and the card reports target and actual shares side by side.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from typing import Any

from aloe.curate.config import MixConfig
from aloe.curate.items import Item, Step
from aloe.records import Conversation


class Mix(Step):
    name = "mix"

    def __init__(self, cfg: MixConfig):
        super().__init__()
        self.cfg = cfg
        self.plan: dict[str, Any] = {}

    def run(self, items: list[Item]) -> list[Item]:
        cfg = self.cfg
        by_group: defaultdict[str, list[Item]] = defaultdict(list)
        for it in items:
            by_group[it.group].append(it)
        weights = {g: r for g, r in cfg.ratios.items() if r > 0}
        norm = sum(weights.values())
        if cfg.total:
            total = cfg.total
        elif weights.get("medical"):
            total = round(len(by_group["medical"]) * norm / weights["medical"])
        else:
            total = sum(len(v) for g, v in by_group.items() if g in weights)
        rng = random.Random(cfg.seed)
        keep: set[str] = set()
        self.plan = {"total_target": total, "groups": {}}
        for g in sorted(set(by_group) | set(weights)):
            avail = by_group.get(g, [])
            target = round(total * weights.get(g, 0) / norm)
            take = rng.sample(avail, min(target, len(avail)))
            keep.update(i.id for i in take)
            self.plan["groups"][g] = {"available": len(avail), "target": target, "taken": len(take),
                                      "target_share": round(weights.get(g, 0) / norm, 3)}
        taken = sum(v["taken"] for v in self.plan["groups"].values())
        for v in self.plan["groups"].values():
            v["actual_share"] = round(v["taken"] / taken, 3) if taken else 0.0
        out = []
        for it in items:
            if it.id in keep:
                out.append(it)
            else:
                self.stats.drop(it, "not_sampled")
        return out


def split(items: list[Item], fraction: float, seed: int) -> tuple[list[Item], list[Item]]:
    """A seeded train/validation split, stratified by group so each split keeps the mix."""
    rng = random.Random(seed)
    train, val = [], []
    by_group: defaultdict[str, list[Item]] = defaultdict(list)
    for it in items:
        by_group[it.group].append(it)
    for g in sorted(by_group):
        group = by_group[g][:]
        rng.shuffle(group)
        n_val = round(len(group) * fraction)
        val += group[:n_val]
        train += group[n_val:]
    rng.shuffle(train)
    rng.shuffle(val)
    return train, val


def to_conversation(it: Item) -> Conversation:
    """A uniform record: every meta key present on every row, so Arrow infers one schema."""
    m = it.meta
    return Conversation(id=it.id, messages=it.messages or [], source=it.source,
                        meta={"group": it.group, "task": m.get("task", "dialogue"), "template": m.get("template", ""),
                              "answer": m.get("answer"), "teacher": m.get("teacher"), "cot_tries": m.get("cot_tries")})


def token_stats(convs: list[Conversation], tokenizer: Any) -> dict[str, Any]:
    """Tokens per conversation (chat template applied), by group and overall."""
    import numpy as np

    lengths: defaultdict[str, list[int]] = defaultdict(list)
    for c in convs:
        if getattr(tokenizer, "chat_template", None):
            n = len(tokenizer.apply_chat_template(c.messages, tokenize=True, return_dict=True)["input_ids"])
        else:
            n = len(tokenizer("\n".join(m["content"] for m in c.messages))["input_ids"])
        lengths[c.meta["group"]].append(n)
        lengths["all"].append(n)

    def summary(v: list[int]) -> dict[str, float]:
        a = np.asarray(v)
        return {"conversations": len(a), "tokens": int(a.sum()), "mean": round(float(a.mean()), 1),
                "median": float(np.median(a)), "p95": float(np.percentile(a, 95)), "max": int(a.max())}

    return {g: summary(v) for g, v in sorted(lengths.items())}


def count_by(convs: list[Conversation], key: str) -> dict[str, int]:
    return dict(Counter(c.meta[key] if key in c.meta else getattr(c, key) for c in convs))
