import json
import shutil
from collections import Counter

import pytest

from aloe.io import RecordError
from aloe.safety.prompts import (
    LOADERS, PACKAGED_DATA, HarmfulPrompt, load_prompts, load_prompts_jsonl, sample_per_source, split_prompts,
)


def test_packaged_slices_load_every_source():
    prompts = load_prompts(list(LOADERS))
    by_source = Counter(p.source for p in prompts)
    assert set(by_source) == {"advbench", "harmbench", "strongreject", "malicious_instruct", "do_not_answer",
                              "medsafetybench"}
    assert len({p.id for p in prompts}) == len(prompts)
    assert all(p.prompt.strip() and p.category for p in prompts)
    med = [p for p in prompts if p.source == "medsafetybench"]
    assert med and all(p.safe_response for p in med)
    assert len({p.category for p in med}) == 9
    assert {p.category for p in prompts if p.source == "do_not_answer"} >= {"information_hazards", "malicious_uses"}
    hb = [p for p in prompts if p.source == "harmbench"]
    assert "copyright" not in {p.category for p in hb}
    assert any("\n\n---\n\n" in p.prompt for p in hb)  # contextual behaviours carry their context


def _copy_source(tmp_path, folder):
    shutil.copytree(PACKAGED_DATA / folder, tmp_path / folder)
    return tmp_path / folder


def test_bad_csv_field_names_file_line_and_field(tmp_path):
    d = _copy_source(tmp_path, "advbench")
    path = d / "harmful_behaviors.csv"
    lines = path.read_text().splitlines()
    lines[3] = ',"target only"'
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(RecordError) as e:
        load_prompts(["advbench"], tmp_path)
    assert e.value.path == str(path) and e.value.where == 4 and e.value.field == "goal"


def test_missing_column_and_bad_jsonl(tmp_path):
    d = _copy_source(tmp_path, "harmbench")
    (d / "strongreject_dataset.csv").write_text("category,source\nx,y\n")
    with pytest.raises(RecordError, match="forbidden_prompt"):
        load_prompts(["strongreject"], tmp_path)
    d = _copy_source(tmp_path, "do_not_answer")
    with open(d / "do_not_answer_en.jsonl", "a") as f:
        f.write(json.dumps({"id": 99, "risk_area": "X", "question": ""}) + "\n")
    with pytest.raises(RecordError) as e:
        load_prompts(["do_not_answer"], tmp_path)
    assert e.value.field == "question" and e.value.where == 41
    with pytest.raises(ValueError, match="unknown prompt source"):
        load_prompts(["nope"])
    with pytest.raises(FileNotFoundError):
        load_prompts(["medsafetybench"], tmp_path)


def test_jsonl_roundtrip(tmp_path):
    p = HarmfulPrompt("x1", "do a bad thing", "custom", "misc", "no")
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps(p.to_dict()) + "\n" + json.dumps({"id": "x2", "prompt": "y", "source": "s"}) + "\n")
    with pytest.raises(RecordError) as e:
        load_prompts_jsonl(path)
    assert e.value.where == 2 and e.value.field == "category"
    path.write_text(json.dumps(p.to_dict()) + "\n")
    assert load_prompts_jsonl(path) == [p]


def test_split_is_seeded_stable_and_disjoint():
    prompts = load_prompts()
    train, test = split_prompts(prompts, 0.5, seed=3)
    assert {p.id for p in train}.isdisjoint({p.id for p in test})
    assert len(train) + len(test) == len(prompts) and 0.3 < len(test) / len(prompts) < 0.7
    # Stable under reordering and under adding prompts.
    train2, test2 = split_prompts(list(reversed(prompts)) + [HarmfulPrompt("new", "x", "s", "c")], 0.5, seed=3)
    assert {p.id for p in test} <= {p.id for p in test2}
    assert split_prompts(prompts, 0.5, seed=4)[1] != test


def test_sample_spreads_over_sources():
    picked = sample_per_source(load_prompts(), 12, seed=0)
    assert len(picked) == 12 and len({p.id for p in picked}) == 12
    assert set(Counter(p.source for p in picked).values()) == {2}
