"""Template diversity, the group mix and the split."""

from __future__ import annotations

from collections import Counter

from aloe.curate.config import MixConfig, SourceConfig, TemplatesConfig
from aloe.curate.items import Item
from aloe.curate.mix import Mix, split
from aloe.curate.sources import load_source
from aloe.curate.templates import Templates


def _load(**kw: object) -> list[Item]:
    return load_source(SourceConfig(**kw))  # type: ignore[arg-type]


def test_templates_vary_are_seeded_and_keep_the_gold():
    mcqs = _load(name="medmcqa", format="aloe_json", path="aloe_prompt_engine/medmcqa/medmcqa_val.json", limit=60)
    gold = {i.id: i.mcq.answer for i in mcqs}  # type: ignore[union-attr]
    out = Templates(TemplatesConfig(seed=3))([*mcqs])
    assert len({i.meta["template"].split("/")[1] for i in out}) >= 4
    for it in out:
        assert it.mcq is None and it.messages[-1]["role"] == "assistant"  # type: ignore[index]
        assert gold[it.id] in it.messages[-1]["content"]  # type: ignore[index]
    again = Templates(TemplatesConfig(seed=3))(_load(name="medmcqa", format="aloe_json", limit=60,
                                                     path="aloe_prompt_engine/medmcqa/medmcqa_val.json"))
    assert [i.messages for i in again] == [i.messages for i in out]
    other = Templates(TemplatesConfig(seed=4))(_load(name="medmcqa", format="aloe_json", limit=60,
                                                     path="aloe_prompt_engine/medmcqa/medmcqa_val.json"))
    assert [i.messages for i in other] != [i.messages for i in out]


def test_pubmedqa_keeps_its_abstract_and_adds_a_summary():
    items = _load(name="pubmedqa", format="pubmedqa", path="pubmedqa/ori_pqal.json", options={"split": "train"},
                  limit=5)
    step = Templates(TemplatesConfig())
    out = step([*items])
    assert Counter(i.meta["task"] for i in out) == {"mcq": 5, "summarisation": 5}
    assert step.stats.added == {"pubmedqa": 5}
    for it in out:
        assert items[0].source == it.source
    mcq = [i for i in out if i.meta["task"] == "mcq"]
    assert all(len(i.messages[0]["content"]) > 300 for i in mcq)  # type: ignore[index]


def _group(n: int, group: str) -> list[Item]:
    return [Item(id=f"{group}-{k}", source=group, group=group,
                 messages=[{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]) for k in range(n)]


def test_mix_hits_the_ratios_when_there_is_enough():
    items = _group(600, "medical") + _group(300, "cot") + _group(500, "general")
    step = Mix(MixConfig(total=500, seed=1))
    out = step(items)
    assert Counter(i.group for i in out) == {"medical": 300, "cot": 100, "general": 100}
    assert step.stats.dropped["not_sampled"] == {"medical": 300, "cot": 200, "general": 400}
    assert [i.id for i in Mix(MixConfig(total=500, seed=1))(items)] == [i.id for i in out]


def test_mix_defaults_to_all_medical_and_reports_shortfalls():
    items = _group(120, "medical") + _group(5, "cot") + _group(100, "general")
    step = Mix(MixConfig())
    out = step(items)
    assert Counter(i.group for i in out) == {"medical": 120, "cot": 5, "general": 40}
    assert step.plan["groups"]["cot"] == {"available": 5, "target": 40, "taken": 5, "target_share": 0.2,
                                          "actual_share": 0.03}


def test_split_is_seeded_disjoint_and_stratified():
    items = _group(200, "medical") + _group(40, "general")
    train, val = split(items, 0.1, seed=0)
    assert len(val) == 24 and Counter(i.group for i in val) == {"medical": 20, "general": 4}
    assert not {i.id for i in train} & {i.id for i in val}
    assert [i.id for i in split(items, 0.1, seed=0)[1]] == [i.id for i in val]
