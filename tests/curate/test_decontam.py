"""Decontamination: lightly edited benchmark test questions planted in a training source all go."""

from __future__ import annotations

import random

import pytest

from aloe.curate.config import DecontamConfig, SourceConfig
from aloe.curate.decontam import Decontaminate
from aloe.curate.items import Item
from aloe.curate.sources import load_source
from aloe.mcq.benchmarks import BENCHMARKS, load_split

CLEAN_SOURCES = [
    SourceConfig(name="medqa_dev", format="medqa", path="medqa/dev.jsonl"),
    SourceConfig(name="medmcqa_train", format="aloe_json", path="aloe_prompt_engine/medmcqa/medmcqa_val.json"),
    SourceConfig(name="headqa_train", format="headqa", path="headqa_en/train_HEAD_EN.json"),
    SourceConfig(name="pubmedqa_train", format="pubmedqa", path="pubmedqa/ori_pqal.json", options={"split": "train"}),
    SourceConfig(name="medquad", format="medquad", path="medquad/medquad_answered.jsonl"),
    SourceConfig(name="ultramedical", format="ultramedical", path="ultramedical_samples/examples.json"),
    SourceConfig(name="chatdoctor", format="alpaca", path="chatdoctor/chatdoctor5k.json"),
]


def _light_edit(text: str, rng: random.Random) -> str:
    """Swap two adjacent words, change one word's case and, in texts of 20 words or more, drop one."""
    w = text.split()
    k = rng.randrange(1, len(w) - 2)
    w[k], w[k + 1] = w[k + 1], w[k]
    if len(w) >= 20:
        del w[rng.randrange(len(w))]
    j = rng.randrange(len(w))
    w[j] = w[j].upper()
    return " ".join(w)


def _planted(rng: random.Random) -> list[Item]:
    """Three test questions of every registered benchmark, edited, as chats and as MCQs."""
    out = []
    for name, bench in BENCHMARKS.items():
        test = load_split(bench, "test")
        for k, m in enumerate(rng.sample(test, 3)):
            options = "\n".join(f"{x}. {t}" for x, t in m.options.items())
            prompt = _light_edit(f"{m.question}\n{options}", rng)
            if k == 0:  # embedded in a longer chat, after some unrelated text
                prompt = "I was studying last night and found this one hard. " + prompt
            out.append(Item(id=f"planted-{name}-{k}", source="planted", group="medical",
                            messages=[{"role": "user", "content": prompt},
                                      {"role": "assistant", "content": f"Answer: {m.answer}"}]))
    return out


def test_planted_benchmark_items_are_removed_and_clean_items_kept():
    rng = random.Random(0)
    clean = [i for s in CLEAN_SOURCES for i in load_source(s)]
    planted = _planted(rng)
    mixed = clean[:]
    for p in planted:
        mixed.insert(rng.randrange(len(mixed) + 1), p)
    step = Decontaminate(DecontamConfig())
    kept = step(mixed)
    assert {i.id for i in kept} == {i.id for i in clean}
    assert sum(c["planted"] for c in step.stats.dropped.values()) == len(planted)
    # the report names each removed item and the very benchmark item it was made from
    assert len(step.report) == len(planted)
    for r in step.report:
        assert r["id"].startswith(f"planted-{r['benchmark']}-")
        assert r["benchmark_id"] and r["benchmark_text"] and r["coverage"] >= 0.2


def test_every_registered_benchmark_is_indexed():
    step = Decontaminate(DecontamConfig())
    assert {b for b, _ in step.index.items} == set(BENCHMARKS)


def test_boilerplate_alone_is_not_contamination():
    phrase = "Which of the following is the most likely diagnosis in this patient's symptoms and findings?"
    item = Item(id="x", source="s", group="medical", mcq=None,
                messages=[{"role": "user", "content": f"A 30-year-old man has a cough. {phrase}"},
                          {"role": "assistant", "content": "Pneumonia."}])
    assert Decontaminate(DecontamConfig())([item]) == [item]


@pytest.mark.slow
def test_embedding_pass_catches_copies_the_ngram_rules_are_told_to_ignore():
    rng = random.Random(1)
    clean = [i for s in CLEAN_SOURCES[:4] for i in load_source(s)]
    planted = _planted(rng)
    # n-gram rules made as strict as they go: the embedding similarity must find the copies they miss
    step = Decontaminate(DecontamConfig(min_coverage=1.0, min_contained=1.0, min_question_contained=1.0, ngram=40,
                                        embedding=True, embedding_threshold=0.8))
    kept = step(clean + planted)
    assert {i.id for i in kept} == {i.id for i in clean}
    # order-free containment still sees the copies whose only edit was a swap; the rest are the embedding's
    by_embedding = [r for r in step.report if r["method"] == "embedding"]
    assert len(by_embedding) >= len(planted) // 2 and all(r["cosine"] >= 0.8 for r in by_embedding)
