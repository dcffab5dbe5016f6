"""`aloe curate RECIPE` end to end on the packaged slices, with a scripted HTTP teacher."""

from __future__ import annotations

import json

import yaml

from aloe.cli import main
from aloe.curate.config import SourceConfig
from aloe.curate.sources import load_source
from aloe.io import iter_jsonl


def test_curate_recipe_end_to_end(serve_teacher, tmp_path):
    cot_src = {"name": "medqa_dev", "format": "medqa", "path": "medqa/dev.jsonl", "cot": True, "limit": 12}
    mcqs = load_source(SourceConfig(**cot_src))  # type: ignore[arg-type]
    # the teacher gets half of them right, the rest never
    script = {i.mcq.question: [i.mcq.answer if k % 2 == 0 else next(x for x in i.mcq.options if x != i.mcq.answer)]
              for k, i in enumerate(mcqs)}  # type: ignore[union-attr]
    teacher = serve_teacher(script=script, faults={mcqs[0].mcq.question: [429]})  # type: ignore[union-attr]
    recipe = {"curate": {
        "sources": [
            {"name": "medquad", "format": "medquad", "path": "medquad/medquad_answered.jsonl", "limit": 120},
            {"name": "wikidoc", "format": "alpaca", "limit": 60,
             "path": "wikidoc_patient_info/medical_meadow_wikidoc_patient_information.json"},
            cot_src,
            {"name": "pubmedqa_train", "format": "pubmedqa", "path": "pubmedqa/ori_pqal.json",
             "options": {"split": "train"}, "limit": 10},
            {"name": "planted", "format": "medqa", "path": "planted/medqa_test_edited.jsonl"},
            {"name": "hh", "format": "hh_rlhf", "path": "hh_rlhf_harmless/harmless-base_test.jsonl.gz",
             "group": "general", "limit": 80},
        ],
        "cot": {"teacher": f"openai:{teacher.url}#scripted", "max_items": 12, "tries": 2, "backoff": 0.01,
                "timeout": 5},
        "mix": {"validation_fraction": 0.1},
    }}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    out = tmp_path / "run"
    assert main(["curate", str(path), "--out", str(out)]) == 0

    card = json.loads((out / "data_card.json").read_text())
    assert card["checks"]["balanced"]
    # counts add up: every source's loaded count flows through every step to the dataset
    assert {k: v["loaded"] for k, v in card["sources"].items()} == card["steps"][0]["in"]
    for prev, nxt in zip(card["steps"], card["steps"][1:], strict=False):
        assert {k: v for k, v in prev["out"].items() if v} == nxt["in"]
    assert sum(card["steps"][-1]["out"].values()) == card["splits"]["train"] + card["splits"]["validation"]
    assert card["cot"]["attempted"] == 12 and card["cot"]["verified"] == 6
    assert card["decontamination"]["removed"] and {r["source"] for r in card["decontamination"]["removed"]} == {"planted"}
    assert card["tokens"]["all"]["conversations"] == card["splits"]["train"] + card["splits"]["validation"]
    md = (out / "data_card.md").read_text()
    assert "## Decontamination" in md and "medqa-test-" in md

    from datasets import load_dataset

    ds = load_dataset("json", data_dir=str(out / "dataset"))
    assert set(ds) == {"train", "validation"}
    assert len(ds["train"]) == card["splits"]["train"] and len(ds["validation"]) == card["splits"]["validation"]
    rows = [r for _, r in iter_jsonl(out / "dataset" / "train.jsonl")] + \
           [r for _, r in iter_jsonl(out / "dataset" / "validation.jsonl")]
    cot = [r for r in rows if r["meta"]["group"] == "cot"]
    assert len(cot) == 6
    for r in cot:
        assert r["messages"][-1]["content"].rstrip().endswith(f"Answer: {r['meta']['answer']}")
    assert not [r for r in rows if r["source"] == "planted"]

    # a rerun pays nothing: every completion comes from the cache
    n = len(teacher.log)
    assert main(["curate", str(path), "--out", str(out)]) == 0
    assert len(teacher.log) == n
