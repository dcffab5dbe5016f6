"""The open-ended run's metrics files, as the real writer makes them, read back through their types;
a file of another shape fails naming the key (the report then lists it as unreadable)."""

from __future__ import annotations

import json

import pytest

from aloe.evaluate.openended.metrics import OpenEndedMetrics, OpenSetMetrics
from aloe.io import read_json

from contract_checks import renamed_key_fails_naming_it


@pytest.fixture
def open_run(tiny_checkpoint, scripted_server, tmp_path):
    from aloe.cli import main

    data = tmp_path / "mine.jsonl"
    rows = [{"id": "a", "question": "What causes asthma wheezing in the lung?", "reference": "airway inflammation"},
            {"id": "b", "question": "Which drug treats heart failure?", "reference": "furosemide",
             "specialty": "cardiology"},
            {"id": "c", "question": "UNPARSABLE: is this safe?"}]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    server = scripted_server(lambda m: "no verdict" if "UNPARSABLE" in m[-1]["content"] else "<VERDICT>1</VERDICT>")
    out = tmp_path / "run"
    assert main(["eval-open", "--model", str(tiny_checkpoint), "--sets", f"jsonl:{data}", "--judge",
                 f"openai:{server.url}#judge", "--max-new-tokens", "4", "--out", str(out), "--no-progress"]) == 0
    return out


def test_the_writers_files_read_back_through_their_types(open_run):
    m = OpenEndedMetrics.read(open_run / "metrics.json")
    assert set(m.sets) == {"mine"} and m.overall.n == 3
    assert m.overall.judge_accuracy is not None and m.overall.judge_accuracy.unparsable == 1
    assert m.overall.rouge_l is not None and m.overall.rouge_l.n == 2  # only questions with a reference
    assert "cardiology" in m.specialties
    one = OpenSetMetrics.read(open_run / "mine" / "metrics.json")
    assert one == m.sets["mine"] and one.set == "mine" and one.fingerprint
    # the typed model writes back the very file it read: no key added, none lost
    assert m.model_dump(mode="json", exclude_unset=True) == read_json(open_run / "metrics.json")


@pytest.mark.parametrize(("file", "path", "cls"), [
    ("metrics.json", ("overall",), OpenEndedMetrics),
    ("metrics.json", ("sets", "mine", "fingerprint"), OpenEndedMetrics),
    ("metrics.json", ("overall", "judge_accuracy", "unparsable"), OpenEndedMetrics),
    ("mine/metrics.json", ("set",), OpenSetMetrics),
])
def test_a_renamed_required_key_fails_naming_it(open_run, tmp_path, file, path, cls):
    renamed_key_fails_naming_it(cls, open_run / file, tmp_path / "drifted.json", path[:-1], path[-1],
                                path[-1] + "_renamed")
