import json
from pathlib import Path

import pytest

from aloe.mcq.benchmarks import BENCHMARKS, PACKAGED_DATA, _hub_headqa, _hub_medmcqa, load_split
from aloe.mcq.loaders import (
    load_aloe_json,
    load_headqa,
    load_medmcqa,
    load_medqa,
    load_mmlu_csv,
    load_pubmedqa,
)
from aloe.io import RecordError


def write_lines(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


MEDMCQA = {"id": "x1", "question": "Q?", "opa": "first", "opb": "second", "opc": "third", "opd": "fourth",
           "exp": "because", "subject_name": "Anatomy"}


@pytest.mark.parametrize("cop,letter,text", [(1, "A", "first"), (2, "B", "second"), (4, "D", "fourth")])
def test_medmcqa_cop_is_one_based(tmp_path, cop, letter, text):
    (q,) = load_medmcqa(write_lines(tmp_path / "dev.json", [MEDMCQA | {"cop": cop}]))
    assert q.answer == letter and q.options[q.answer] == text
    assert q.explanation == "because" and q.subject == "Anatomy"


def test_medmcqa_hub_copy_is_zero_based():
    q = _hub_medmcqa(0, MEDMCQA | {"cop": 0}, "medmcqa")
    assert q.answer == "A" and q.options["A"] == "first"


def test_medmcqa_cop_zero_rejected_in_original_release(tmp_path):
    with pytest.raises(RecordError, match=r"dev\.json:1 field 'cop'.*out of range"):
        list(load_medmcqa(write_lines(tmp_path / "dev.json", [MEDMCQA | {"cop": 0}])))


def test_real_medmcqa_slice_first_record():
    # The first record of the official dev split: "not true for myelinated nerve fibers", cop 1.
    q = load_split(BENCHMARKS["medmcqa"], "test")[0]
    assert q.answer == "A" and q.options["A"].startswith("Impulse through myelinated fibers is slower")


def test_medqa_answer_idx(tmp_path):
    rec = {"question": "Q", "options": {"A": "a", "B": "b", "C": "c", "D": "d"}, "answer_idx": "C",
           "answer": "c", "meta_info": "step1"}
    (q,) = load_medqa(write_lines(tmp_path / "test.jsonl", [rec]))
    assert q.answer == "C" and q.options[q.answer] == rec["answer"]


def test_medqa_slice_answers_match_answer_text():
    for line, q in zip(open(PACKAGED_DATA / "medqa/test.jsonl"),
                       load_split(BENCHMARKS["medqa"], "test"), strict=True):
        assert q.options[q.answer] == json.loads(line)["answer"]


def test_pubmedqa_split_context_and_labels(tmp_path):
    data = {"1": {"QUESTION": "q1", "CONTEXTS": ["a", "b"], "final_decision": "no", "LONG_ANSWER": "l"},
            "2": {"QUESTION": "q2", "CONTEXTS": ["c"], "final_decision": "maybe"}}
    (tmp_path / "ori_pqal.json").write_text(json.dumps(data))
    (tmp_path / "test_ground_truth.json").write_text(json.dumps({"1": "no"}))
    (test,) = load_pubmedqa(tmp_path / "ori_pqal.json", split="test")
    (train,) = load_pubmedqa(tmp_path / "ori_pqal.json", split="train")
    assert test.id.endswith("-1") and test.answer == "B" and test.options["B"] == "no"
    assert test.context == "a\nb"
    assert train.answer == "C" and train.options["C"] == "maybe"


def test_mmlu_csv_headerless_with_commas_and_newlines(tmp_path):
    p = tmp_path / "anatomy_test.csv"
    p.write_text('"Which, of these?\nSecond line",a,"b, c",d,e,C\nSimple?,1,2,3,4,A\n')
    qs = list(load_mmlu_csv(p))
    assert [q.answer for q in qs] == ["C", "A"]
    assert qs[0].question == "Which, of these?\nSecond line" and qs[0].options["B"] == "b, c"
    assert qs[0].subject == "anatomy"


def test_headqa_ra_is_an_aid_not_a_position(tmp_path):
    data = {"exams": {"E1": {"category": "medicine", "data": [
        {"qid": "7", "qtext": "Q", "ra": "12", "answers": [{"aid": 10, "atext": "x"}, {"aid": 12, "atext": "y"},
                                                           {"aid": 11, "atext": "z"}]}]}}}
    (tmp_path / "h.json").write_text(json.dumps(data))
    (q,) = load_headqa(tmp_path / "h.json")
    assert q.answer == "B" and q.options["B"] == "y" and q.subject == "medicine"
    row = data["exams"]["E1"]["data"][0]
    assert _hub_headqa(0, row, "headqa").answer == "B"


def test_aloe_json_with_string_options_and_json_context(tmp_path):
    data = {"k1": {"id": "pubmedqa_test_0", "question": "Q?", "correct_answer": "C",
                   "options": "{'A': 'yes', 'B': 'no', 'C': 'maybe'}", "context": json.dumps(["s1", "s2"])}}
    (tmp_path / "pubmedqa_test.json").write_text(json.dumps(data))
    (q,) = load_aloe_json(tmp_path / "pubmedqa_test.json")
    assert q.answer == "C" and q.options == {"A": "yes", "B": "no", "C": "maybe"} and q.context == "s1\ns2"


@pytest.mark.parametrize("bad,match", [
    ("{not json", r"test\.jsonl:2: not valid JSON"),
    ({"question": "Q", "options": {"A": "a", "B": "b"}, "answer_idx": "E"}, r"test\.jsonl:2 field 'answer_idx'"),
    ({"question": "Q", "options": {"A": "a", "C": "b"}, "answer_idx": "A"}, r"test\.jsonl:2 field 'options'"),
    ({"options": {"A": "a", "B": "b"}, "answer_idx": "A"}, r"test\.jsonl:2 field 'question': missing"),
    ({"question": "Q", "options": {"A": "a", "B": ""}, "answer_idx": "A"}, r"test\.jsonl:2 field 'options'"),
])
def test_malformed_medqa_lines_are_rejected_with_file_line_and_field(tmp_path, bad, match):
    good = {"question": "Q", "options": {"A": "a", "B": "b"}, "answer_idx": "A"}
    with pytest.raises(RecordError, match=match):
        list(load_medqa(write_lines(tmp_path / "test.jsonl", [good, bad])))


def test_malformed_csv_and_headqa_rejected(tmp_path):
    p = tmp_path / "x_test.csv"
    p.write_text("Q,a,b,c,d\n")
    with pytest.raises(RecordError, match=r"x_test\.csv:1: expected 6 columns"):
        list(load_mmlu_csv(p))
    (tmp_path / "h.json").write_text(json.dumps({"exams": {"E": {"data": [
        {"qid": "1", "qtext": "Q", "ra": "9", "answers": [{"aid": 1, "atext": "x"}, {"aid": 2, "atext": "y"}]}]}}}))
    with pytest.raises(RecordError, match=r"record 'E/1' field 'ra'"):
        list(load_headqa(tmp_path / "h.json"))


def test_every_benchmark_slice_loads_with_test_and_fewshot():
    for b in BENCHMARKS.values():
        test, pool = load_split(b, "test"), load_split(b, "fewshot")
        assert len(test) >= 100 and len(pool) >= 5, b.name
        assert len({q.id for q in test}) == len(test), f"{b.name}: duplicate ids"
        assert not {q.id for q in test} & {q.id for q in pool}, f"{b.name}: test and few-shot pool overlap"


def test_missing_data_dir_names_expected_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"medqa/test\.jsonl"):
        load_split(BENCHMARKS["medqa"], "test", data_dir=tmp_path)
