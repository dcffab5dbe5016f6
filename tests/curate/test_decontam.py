"""Decontamination: lightly edited benchmark test questions planted in a training source all go."""

from __future__ import annotations

import random

from aloe.curate.config import DecontamConfig, SourceConfig
from aloe.curate.decontam import Decontaminate
from aloe.curate.items import Item
from aloe.curate.sources import load_source
from aloe.evaluate.benchmarks import BENCHMARKS, load_split

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
    """Swap two adjacent words, drop one, change one word's case: what a paraphrasing copy looks like."""
    w = text.split()
    if len(w) > 6:
        k = rng.randrange(1, len(w) - 2)
        w[k], w[k + 1] = w[k + 1], w[k]
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
    assert step.stats.dropped["ngram_overlap"] == {"planted": len(planted)}
    # the report names each removed item and the very benchmark item it was made from
    assert len(step.report) == len(planted)
    for r in step.report:
        assert r["id"].startswith(f"planted-{r['benchmark']}-")
        assert r["benchmark_id"] and r["benchmark_text"] and r["coverage"] >= 0.1


def test_every_registered_benchmark_is_indexed():
    step = Decontaminate(DecontamConfig())
    assert {b for b, _ in step.index.items} == set(BENCHMARKS)


def test_boilerplate_alone_is_not_contamination():
    phrase = "Which of the following is the most likely diagnosis in this patient's symptoms and findings?"
    item = Item(id="x", source="s", group="medical", mcq=None,
                messages=[{"role": "user", "content": f"A 30-year-old man has a cough. {phrase}"},
                          {"role": "assistant", "content": "Pneumonia."}])
    assert Decontaminate(DecontamConfig())([item]) == [item]
