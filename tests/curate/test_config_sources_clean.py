"""The recipe section, the source adapters and the cleaning rules."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aloe.curate.clean import Clean
from aloe.curate.config import CleanConfig, SourceConfig, load_curate_config
from aloe.curate.items import Item
from aloe.curate.sources import READERS, load_source
from aloe.io import RecordError

DEMO = Path(__file__).resolve().parents[2] / "recipes" / "demo.yaml"


def test_demo_recipe_validates_and_every_source_loads():
    cfg = load_curate_config(DEMO)
    for src in cfg.sources:
        items = load_source(src)
        assert items, src.name
        assert all(i.source == src.name and i.group == src.group for i in items)
        assert all(i.text.strip() for i in items)


def test_unknown_keys_are_rejected_by_name(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("curate:\n  sources: [{name: a, format: medquad, path: x}]\n  dedup: {treshold: 0.5}\n")
    with pytest.raises(ValueError, match=r"curate\.dedup\.treshold: Extra inputs are not permitted"):
        load_curate_config(p)
    p.write_text("curate:\n  sources: [{name: a, format: medquad, path: x, grop: general}]\n")
    with pytest.raises(ValueError, match=r"curate\.sources\.0\.grop"):
        load_curate_config(p)
    p.write_text("sft: {}\n")
    with pytest.raises(ValueError, match="no `curate:` section"):
        load_curate_config(p)


def test_bad_records_name_file_line_and_field(tmp_path):
    (tmp_path / "q.jsonl").write_text(json.dumps({"question": "What is x?", "answer": "y"}) + "\n"
                                      + json.dumps({"question": "What is z?"}) + "\n")
    src = SourceConfig(name="m", format="medquad", path="q.jsonl")
    with pytest.raises(RecordError) as e:
        load_source(src, tmp_path)
    assert e.value.where == 2 and e.value.field == "answer" and str(tmp_path / "q.jsonl") in str(e.value)
    with pytest.raises(ValueError, match="unknown format 'nope'"):
        load_source(SourceConfig(name="m", format="nope", path="q.jsonl"), tmp_path)
    with pytest.raises(FileNotFoundError, match="source 'm' file"):
        load_source(SourceConfig(name="m", format="medquad", path="missing.jsonl"), tmp_path)


def test_generic_jsonl_with_column_mapping(tmp_path):
    rows = [{"q": "Is water wet?", "a": "Yes, water is wet.", "k": 7},
            {"stem": "2+2?", "choices": ["3", "4"], "gold": 1}]
    (tmp_path / "chat.jsonl").write_text(json.dumps(rows[0]) + "\n")
    (tmp_path / "mcq.jsonl").write_text(json.dumps(rows[1]) + "\n")
    chat = load_source(SourceConfig(name="c", format="jsonl", path="chat.jsonl", group="general",
                                    columns={"prompt": "q", "response": "a", "id": "k"}), tmp_path)
    assert chat[0].id == "c-7" and chat[0].messages[1]["content"] == "Yes, water is wet."  # type: ignore[index]
    mcq = load_source(SourceConfig(name="m", format="jsonl", path="mcq.jsonl",
                                   columns={"question": "stem", "options": "choices", "answer": "gold"}), tmp_path)
    assert mcq[0].mcq is not None and mcq[0].mcq.answer == "B" and mcq[0].mcq.options == {"A": "3", "B": "4"}
    assert {"medquad", "alpaca", "ultramedical", "hh_rlhf", "medqa", "medmcqa", "pubmedqa", "headqa", "jsonl",
            "parquet", "hub"} <= set(READERS)


def _chat(k: int, user: str, answer: str, source: str = "s") -> Item:
    return Item(id=f"{source}-{k}", source=source, group="medical",
                messages=[{"role": "user", "content": user}, {"role": "assistant", "content": answer}])


def test_clean_rules_change_and_drop_with_counts_per_source():
    items = [
        _chat(0, "See https://example.org/x?y=1 now", "Write to dr.who@example.com <b>today</b>&amp;  then\x07 rest."),
        _chat(1, "What is gout?", "Gout is an inflammatory arthritis caused by urate crystals."),
        _chat(2, "What is it?", "N/A", source="t"),
        _chat(3, "Question?", "This summary section has not yet been written.", source="t"),
        _chat(4, "<p></p>", "An answer that is long enough."),
        _chat(5, "Long?", "word " * 3000),
        _chat(6, "Echo me", "echo me"),
    ]
    step = Clean(CleanConfig(min_chars=2, max_chars=5000, min_answer_words=2))
    out = step(items)
    assert [i.id for i in out] == ["s-0", "s-1"]
    assert out[0].messages[0]["content"] == "See now"  # type: ignore[index]
    assert out[0].messages[1]["content"] == "Write to today & then rest."  # type: ignore[index]
    st = step.stats.to_dict()
    assert st["changed"]["urls"] == {"s": 1} and st["changed"]["emails"] == {"s": 1}
    assert st["changed"]["markup"] == {"s": 2} and st["changed"]["control_chars"] == {"s": 1}
    assert st["dropped"] == {"non_answer": {"t": 2, "s": 1}, "empty_turn": {"s": 1}, "too_long": {"s": 1}}
    assert st["in"] == {"s": 5, "t": 2} and st["out"] == {"s": 2}


def test_clean_mcq_fields():
    src = SourceConfig(name="medmcqa", format="aloe_json", path="aloe_prompt_engine/medmcqa/medmcqa_val.json", limit=3)
    items = load_source(src)
    assert items[0].mcq is not None
    items[0].mcq.question = "  Cubitus   varus <i>is</i> seen in\x0b "
    out = Clean(CleanConfig())(items)
    assert out[0].mcq.question == "Cubitus varus is seen in"  # type: ignore[union-attr]
