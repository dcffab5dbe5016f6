"""The judge through a scripted OpenAI-compatible server; the whole eval-open run on a tiny checkpoint."""

from __future__ import annotations

import json
import re

import pytest

from aloe.evaluate.openended.judge import judge_answers, parse_verdict
from aloe.evaluate.openended.specialty import (
    GENERAL,
    UNCLASSIFIED,
    keyword_specialty,
    model_specialties,
)
from aloe.models.backends import get_generator


def test_parse_verdict():
    assert parse_verdict("Same conclusion. <VERDICT>1</VERDICT>") == 1
    assert parse_verdict("wrong drug <verdict> 0 </verdict>") == 0
    assert parse_verdict("<VERDICT>1</VERDICT> ... on reflection <VERDICT>0</VERDICT>") is None
    assert parse_verdict("The answer is correct.") is None
    assert parse_verdict("<VERDICT>yes</VERDICT>") is None


def _judge_rule(messages):
    """Correct (1) when the candidate contains the reference; no verdict when the question asks for it."""
    prompt = messages[-1]["content"]
    if "UNPARSABLE" in prompt:
        return "I am not sure."
    ref = re.search(r"Reference answer:\n(.*?)\n\nCandidate answer:", prompt, re.DOTALL)
    cand = re.search(r"Candidate answer:\n(.*?)\n\nVerdict", prompt, re.DOTALL).group(1)
    ok = ref is not None and ref.group(1).lower() in cand.lower()
    return f"Justification. <VERDICT>{int(ok)}</VERDICT>"


def test_judge_counts_unparsable_and_caches(scripted_server, tmp_path):
    server = scripted_server(_judge_rule)
    judge = get_generator(f"openai:{server.url}#judge", cache_dir=str(tmp_path), progress=False)
    qs = ["Q1?", "Q2?", "UNPARSABLE Q3?"]
    answers = ["It is cisplatin, clearly.", "It is aspirin.", "whatever"]
    refs = ["cisplatin", "cisplatin", "cisplatin"]
    out = judge_answers(judge, qs, answers, refs)
    assert [o["verdict"] for o in out] == [1, 0, None]
    assert len(server.requests) == 3
    assert server.requests[0]["temperature"] == 0.0
    again = judge_answers(get_generator(f"openai:{server.url}#judge", cache_dir=str(tmp_path), progress=False),
                          qs, answers, refs)
    assert again == out and len(server.requests) == 3  # every verdict came from the cache


def test_keyword_and_model_specialty(scripted_server, tmp_path):
    assert keyword_specialty("A 5-year-old with wheezing and asthma, cough at night") == "pulmonology"
    assert keyword_specialty("Chest pain radiating to the arm; ECG shows ST elevation in the heart") == "cardiology"
    assert keyword_specialty("What is the weather?") == GENERAL
    server = scripted_server(lambda m: "Neurology." if "seizure" in m[-1]["content"] else "I don't know")
    gen = get_generator(f"openai:{server.url}#clf", cache_dir=str(tmp_path), progress=False)
    assert model_specialties(gen, ["A seizure at night?", "Something odd"]) == ["neurology", UNCLASSIFIED]


def test_eval_open_end_to_end_and_resume(tiny_checkpoint, scripted_server, tmp_path, capsys):
    from aloe.cli import main

    data = tmp_path / "mine.jsonl"
    rows = [{"id": "a", "question": "What causes asthma wheezing in the lung?", "reference": "airway inflammation"},
            {"id": "b", "question": "Which drug treats heart failure with an ECG change?", "reference": "furosemide",
             "specialty": "cardiology"},
            {"id": "c", "question": "UNPARSABLE: is this safe?"}]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    # The judge approves everything except what it cannot parse: accuracy 2/2, 1 unparsable.
    server = scripted_server(lambda m: "no verdict" if "UNPARSABLE" in m[-1]["content"] else "<VERDICT>1</VERDICT>")
    out = tmp_path / "run"
    argv = ["eval-open", "--model", str(tiny_checkpoint), "--sets", f"jsonl:{data}", "--judge",
            f"openai:{server.url}#judge", "--max-new-tokens", "6", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    m = metrics["sets"]["mine"]
    assert m["n"] == 3
    assert m["judge_accuracy"]["mean"] == 1.0 and m["judge_accuracy"]["n"] == 2
    assert m["judge_accuracy"]["unparsable"] == 1
    assert m["rouge_l"]["n"] == 2 and 0.0 <= m["rouge_l"]["mean"] <= 1.0
    assert -1.0 <= m["embedding_similarity"]["mean"] <= 1.0
    assert m["relaxed_perplexity"]["mean"] <= m["perplexity"]["mean"] + 1e-9
    preds = [json.loads(x) for x in (out / "mine" / "predictions.jsonl").read_text().splitlines()]
    assert [p["specialty"] for p in preds] == ["pulmonology", "cardiology", GENERAL]
    assert "perplexity" not in preds[2]  # no reference, no reference-based figure
    assert set(metrics["specialties"]) == {"pulmonology", "cardiology", GENERAL}
    assert "per specialty" in capsys.readouterr().out
    n_requests = len(server.requests)
    assert main(argv) == 0  # the finished set is reused: the judge is not asked again
    assert len(server.requests) == n_requests


def test_eval_bias_cli_writes_flip_rates(tiny_checkpoint, tmp_path, capsys):
    from aloe.cli import main

    out = tmp_path / "bias"
    assert main(["eval-bias", "--model", str(tiny_checkpoint), "--limit", "6", "--attributes", "sex,age",
                 "--out", str(out), "--no-progress"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    rows = [json.loads(x) for x in (out / "probes.jsonl").read_text().splitlines()]
    for attr in ("sex", "age"):
        m = metrics["attributes"][attr]
        probed = [r for r in rows if r["attribute"] == attr]
        assert m["n"] == len(probed)
        assert m["n"] + sum(m.get("skipped", {}).values()) == 6  # every question probed or skipped with a reason
        if probed:
            assert m["flip_rate"] == pytest.approx(sum(r["flipped"] for r in probed) / len(probed))
    assert "| sex |" in capsys.readouterr().out
    assert main(["eval-bias", "--model", str(tiny_checkpoint), "--attributes", "race"]) == 2  # clear error
