"""The packaged open-ended slices load through the registry; bad rows name file, line and field."""

from __future__ import annotations

import pytest

from aloe.evaluate.openended.datasets import OPEN_SETS, load_open_set
from aloe.io import RecordError


def test_packaged_sets_load():
    sizes = {name: load_open_set(name) for name in OPEN_SETS}
    assert {k: len(v) for k, v in sizes.items()} == {"openmedqa": 40, "liveqa_medical": 20, "medquad": 30}
    assert all(it.reference for it in sizes["openmedqa"] + sizes["medquad"])
    assert sum(it.reference is not None for it in sizes["liveqa_medical"]) == 1
    assert len({it.id for items in sizes.values() for it in items}) == 90
    assert len(load_open_set("medquad", limit=3)) == 3


def test_user_jsonl_and_errors(tmp_path):
    good = tmp_path / "mine.jsonl"
    good.write_text('{"id": "x", "question": "Why?", "reference": "Because.", "specialty": "cardiology"}\n'
                    '{"question": "No reference?"}\n')
    a, b = load_open_set(f"jsonl:{good}")
    assert (a.id, a.reference, a.specialty, b.reference, b.id) == ("x", "Because.", "cardiology", None, "mine-2")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "ok"}\n{"question": 3}\n')
    with pytest.raises(RecordError, match=r"bad.jsonl:2 field 'question'"):
        load_open_set(f"jsonl:{bad}")
    with pytest.raises(ValueError, match="unknown open-ended set"):
        load_open_set("nope")
