"""Malformed benchmark files: a byte that is not UTF-8 is named by file, line and offset, and a file
with no question is refused, never scored as 0 questions with a nan accuracy."""

import gzip
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from aloe.cli import main
from aloe.mcq.benchmarks import BENCHMARKS, load_split
from aloe.mcq.loaders import (
    load_aloe_json,
    load_headqa,
    load_medmcqa,
    load_medqa,
    load_mmlu_csv,
    load_pubmedqa,
)
from aloe.evaluate.mcqa import MCQASettings
from aloe.evaluate.run import EvalRequest, run_eval
from aloe.io import RecordError

# Stands for the byte that is not UTF-8: each file below is valid until it is swapped in.
MARK = "@BAD@"
BAD = b"\xff"


def _jsonl(*questions: str) -> str:
    return "".join(json.dumps({"question": q, "options": {"A": "a", "B": "b"}, "answer_idx": "A",
                               "opa": "a", "opb": "b", "opc": "c", "opd": "d", "cop": 1}) + "\n" for q in questions)


def _pubmedqa(question: str) -> str:
    return json.dumps({"1": {"QUESTION": "Q1?", "CONTEXTS": ["c"], "final_decision": "yes"},
                       "2": {"QUESTION": question, "CONTEXTS": ["c"], "final_decision": "no"}}, indent=2)


def _headqa(question: str) -> str:
    rec = {"qid": 1, "qtext": question, "ra": 1, "answers": [{"aid": 1, "atext": "x"}, {"aid": 2, "atext": "y"}]}
    return json.dumps({"exams": {"E": {"category": "medicine", "data": [rec]}}}, indent=2)


def _aloe_json(question: str) -> str:
    return json.dumps({"k1": {"question": "Q1?", "options": {"A": "a", "B": "b"}, "correct_answer": "A"},
                       "k2": {"question": question, "options": {"A": "a", "B": "b"}, "correct_answer": "B"}},
                      indent=2)


# (loader, file name, benchmark, text of a file whose last question holds MARK)
FORMATS: list[tuple[Callable, str, str, str]] = [
    (load_medqa, "test.jsonl", "medqa", _jsonl("Q1?", f"Q2 {MARK}?")),
    (load_medmcqa, "dev.json", "medmcqa", _jsonl("Q1?", f"Q2 {MARK}?")),
    (load_pubmedqa, "ori_pqal.json", "pubmedqa", _pubmedqa(f"Q2 {MARK}?")),
    # a quoted newline makes the CSV's row 2 start on line 3: the error must give the line
    (load_mmlu_csv, "anatomy_test.csv", "mmlu_medical", f'"Two\nlines?",a,b,c,d,A\nQ2 {MARK}?,a,b,c,d,B\n'),
    (load_headqa, "test_HEAD_EN.json", "headqa", _headqa(f"Q {MARK}?")),
    (load_aloe_json, "careqa_test.json", "careqa", _aloe_json(f"Q2 {MARK}?")),
]
IDS = [f[2] for f in FORMATS]


def _load(load: Callable, path: Path, bench: str) -> list:
    # PubMedQA's test split is the PMIDs listed beside the file; "all" reads every record.
    return list(load(path, source=bench, **({"split": "all"} if load is load_pubmedqa else {})))


@pytest.mark.parametrize("load,name,bench,text", FORMATS, ids=IDS)
def test_formats_load_without_the_bad_byte(tmp_path, load, name, bench, text):
    path = tmp_path / name
    path.write_text(text.replace(MARK, "ok"))
    assert len(_load(load, path, bench)) >= 1


@pytest.mark.parametrize("load,name,bench,text", FORMATS, ids=IDS)
def test_bad_utf8_names_file_line_and_byte_offset(tmp_path, load, name, bench, text):
    raw = text.encode().replace(MARK.encode(), BAD)
    offset = raw.index(BAD)
    line = raw[:offset].count(b"\n") + 1
    assert line > 1  # the file's first line decodes: the line number is found, not assumed
    path = tmp_path / name
    path.write_bytes(raw)
    with pytest.raises(RecordError) as e:
        _load(load, path, bench)
    assert str(e.value) == f"{path}:{line}: not valid UTF-8 (byte 0xff at byte offset {offset})"


def test_bad_utf8_in_gzipped_jsonl_counts_uncompressed_bytes(tmp_path):
    raw = _jsonl("Q1?", f"Q2 {MARK}?").encode().replace(MARK.encode(), BAD)
    path = tmp_path / "test.jsonl.gz"
    path.write_bytes(gzip.compress(raw))
    with pytest.raises(RecordError, match=rf"test\.jsonl\.gz:2: not valid UTF-8 \(byte 0xff at byte offset "
                                          rf"{raw.index(BAD)}\)"):
        list(load_medqa(path))


@pytest.mark.parametrize("load,name,bench,text", FORMATS, ids=IDS)
@pytest.mark.parametrize("content", ["", "\n\n  \n"], ids=["empty", "blank-lines"])
def test_empty_or_blank_file_is_refused_naming_the_file(tmp_path, load, name, bench, text, content):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(RecordError) as e:
        _load(load, path, bench)
    if load in (load_pubmedqa, load_headqa, load_aloe_json):  # one JSON document: its missing value, at the end
        expected = f"{path}:{content.count(chr(10)) + 1}: not valid JSON"
    elif load is load_mmlu_csv and content:  # csv reads a blank line as a row of no columns
        expected = f"{path}:1: expected 6 columns"
    else:  # JSONL skips blank lines, which leaves no question
        expected = f"{path}: no {bench} questions; refusing an empty benchmark"
    assert str(e.value).startswith(expected), e.value


@pytest.mark.parametrize("load,name,bench,content", [
    (load_pubmedqa, "ori_pqal.json", "pubmedqa", "{}"),
    (load_headqa, "test_HEAD_EN.json", "headqa", '{"exams": {"E": {"data": []}}}'),
    (load_aloe_json, "careqa_test.json", "careqa", "{}"),
])
def test_json_without_questions_is_refused(tmp_path, load, name, bench, content):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(RecordError) as e:
        _load(load, path, bench)
    assert str(e.value) == f"{path}: no {bench} questions; refusing an empty benchmark"


def test_split_without_questions_names_the_split(tmp_path):
    (tmp_path / "ori_pqal.json").write_text(_pubmedqa("Q2?"))
    (tmp_path / "test_ground_truth.json").write_text(json.dumps({"1": "yes", "2": "no"}))
    with pytest.raises(RecordError) as e:
        list(load_pubmedqa(tmp_path / "ori_pqal.json", split="train", source="pubmedqa"))
    assert str(e.value) == f"{tmp_path / 'ori_pqal.json'}: no pubmedqa questions in the train split; " \
        "refusing an empty benchmark"


def test_empty_benchmark_in_a_data_dir_names_file_and_benchmark(tmp_path):
    (tmp_path / "medqa").mkdir()
    (tmp_path / "medqa" / "test.jsonl").write_text("\n")
    with pytest.raises(RecordError) as e:
        load_split(BENCHMARKS["medqa"], "test", data_dir=tmp_path)
    assert str(e.value).startswith(f"{tmp_path / 'medqa' / 'test.jsonl'}: no medqa questions")


def test_eval_of_an_empty_benchmark_exits_nonzero_without_metrics(tiny_checkpoint, tmp_path, capsys):
    data, out = tmp_path / "data", tmp_path / "ev"
    (data / "medqa").mkdir(parents=True)
    (data / "medqa" / "test.jsonl").write_text("")
    rc = main(["eval", "--model", str(tiny_checkpoint), "--benchmarks", "medqa", "--data-dir", str(data),
               "--out", str(out), "--no-progress"])
    assert rc == 2
    assert f"{data}/medqa/test.jsonl: no medqa questions" in capsys.readouterr().err
    assert not list(tmp_path.rglob("metrics.json"))


def test_run_eval_refuses_zero_questions(tiny_checkpoint, tmp_path, monkeypatch):
    # A hub copy, unlike a local file, can come back empty without any loader noticing.
    monkeypatch.setattr("aloe.evaluate.run.load_split", lambda *a, **k: [])
    req = EvalRequest(model=str(tiny_checkpoint), benchmarks=[BENCHMARKS["medqa"]], settings=MCQASettings(),
                      out_dir=tmp_path / "ev", source="hub")
    with pytest.raises(ValueError, match="medqa: no questions to evaluate in the hub test split"):
        run_eval(req)
    assert not list(tmp_path.rglob("metrics.json"))
