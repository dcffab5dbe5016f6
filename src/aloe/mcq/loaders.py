"""Loaders that map each benchmark's own file format into MCQ records, quirks handled once here.

Every loader raises RecordError naming the file, the line (or record key) and the field when a
record is malformed, and naming the file when it holds no question; nothing is silently skipped
or guessed.
"""

from __future__ import annotations

import ast
import csv
import functools
import json
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Concatenate, ParamSpec

from aloe.io import RecordError, iter_jsonl, open_text, read_json, require_file
from aloe.records import LETTERS, MCQ


def _str_field(path: Path, where: str | int, rec: Mapping[str, Any], key: str, optional: bool = False) -> str | None:
    if key not in rec or rec[key] is None:
        if optional:
            return None
        raise RecordError(path, where, key, "missing")
    val = rec[key]
    if not isinstance(val, str | int | float):
        raise RecordError(path, where, key, f"expected text, got {type(val).__name__}")
    val = str(val).strip()
    if not val and not optional:
        raise RecordError(path, where, key, "empty")
    return val or None


def _make(path: Path, where: str | int, **kw: Any) -> MCQ:
    try:
        return MCQ(**kw)
    except ValueError as e:
        field, _, problem = str(e).partition(": ")
        raise RecordError(path, where, field, problem) from None


def _options_from_list(path: Path, where: str | int, texts: list[Any], field: str) -> dict[str, str]:
    if not 2 <= len(texts) <= len(LETTERS):
        raise RecordError(path, where, field, f"expected 2-{len(LETTERS)} options, got {len(texts)}")
    out = {}
    for i, t in enumerate(texts):
        if not isinstance(t, str | int | float) or not str(t).strip():
            raise RecordError(path, where, field, f"option {i + 1} is empty or not text")
        out[LETTERS[i]] = str(t).strip()
    return out


def _options_from_dict(path: Path, where: str | int, opts: Any, field: str = "options") -> dict[str, str]:
    if isinstance(opts, str):
        # HPAI's PubMedQA files store options as a Python dict literal in a string.
        try:
            opts = ast.literal_eval(opts)
        except (ValueError, SyntaxError):
            raise RecordError(path, where, field, "a string that is not a dict literal") from None
    if not isinstance(opts, dict):
        raise RecordError(path, where, field, f"expected an object of letter -> text, got {type(opts).__name__}")
    letters = sorted(opts)
    if letters != list(LETTERS[: len(letters)]):
        raise RecordError(path, where, field, f"letters must be A, B, ... without gaps, got {letters}")
    return _options_from_list(path, where, [opts[k] for k in letters], field)


def _answer_letter(path: Path, where: str | int, value: Any, field: str, n_options: int, base: int | None) -> str:
    """An answer given as a letter (base None) or as a 0- or 1-based index (base 0 or 1)."""
    if base is None:
        if not isinstance(value, str) or value.strip().upper() not in LETTERS[:n_options]:
            raise RecordError(path, where, field, f"{value!r} is not a letter among A-{LETTERS[n_options - 1]}")
        return value.strip().upper()
    try:
        idx = int(value) - base
    except (TypeError, ValueError):
        raise RecordError(path, where, field, f"{value!r} is not an integer index") from None
    if not 0 <= idx < n_options:
        raise RecordError(path, where, field, f"{value!r} is out of range for {n_options} options ({base}-based)")
    return LETTERS[idx]


P = ParamSpec("P")


def _refusing_empty(
    load: Callable[Concatenate[Path, P], Iterator[MCQ]],
) -> Callable[Concatenate[Path, P], Iterator[MCQ]]:
    """A file with no question (empty, blank lines, `{}`) would be scored as 0 questions: a nan accuracy."""
    @functools.wraps(load)
    def checked(path: Path, /, *args: P.args, **kwargs: P.kwargs) -> Iterator[MCQ]:
        n = 0
        for n, q in enumerate(load(path, *args, **kwargs), 1):
            yield q
        if not n:
            bench = kwargs.get("source") or load.__name__.removeprefix("load_")
            split = f" in the {kwargs['split']} split" if kwargs.get("split", "all") != "all" else ""
            raise RecordError(path, None, None, f"no {bench} questions{split}; refusing an empty benchmark")
    return checked


# -- one function per source format ---------------------------------------------------------------

@_refusing_empty
def load_medqa(path: Path, source: str = "medqa") -> Iterator[MCQ]:
    """MedQA-USMLE JSONL (jind11 layout): options {A..D}, answer_idx letter, meta_info step."""
    for line, rec in iter_jsonl(path):
        opts = _options_from_dict(path, line, rec.get("options"))
        yield _make(path, line, id=f"{source}-{path.stem}-{line}", question=_str_field(path, line, rec, "question"),
                    options=opts, answer=_answer_letter(path, line, rec.get("answer_idx"), "answer_idx", len(opts), None),
                    subject=_str_field(path, line, rec, "meta_info", optional=True), source=source)


def medmcqa_record(path: Path, where: str | int, rec: Mapping[str, Any], cop_base: int, source: str) -> MCQ:
    opts = _options_from_list(path, where, [rec.get(k) for k in ("opa", "opb", "opc", "opd")], "opa..opd")
    return _make(path, where, id=str(rec.get("id") or f"{source}-{where}"),
                 question=_str_field(path, where, rec, "question"), options=opts,
                 answer=_answer_letter(path, where, rec.get("cop"), "cop", 4, cop_base),
                 explanation=_str_field(path, where, rec, "exp", optional=True),
                 subject=_str_field(path, where, rec, "subject_name", optional=True), source=source)


@_refusing_empty
def load_medmcqa(path: Path, source: str = "medmcqa") -> Iterator[MCQ]:
    """MedMCQA JSONL as released: `cop` is 1-based (1 = opa = A); the hub copy is 0-based."""
    for line, rec in iter_jsonl(path):
        yield medmcqa_record(path, line, rec, cop_base=1, source=source)


def _pubmedqa_split(path: Path, split: str) -> set[str] | None:
    if split == "all":
        return None
    truth = read_json(require_file(path.parent / "test_ground_truth.json", "PubMedQA test split file"))
    return set(truth)


@_refusing_empty
def load_pubmedqa(path: Path, split: str = "test", source: str = "pubmedqa") -> Iterator[MCQ]:
    """PubMedQA PQA-L `ori_pqal.json`; the test split is the PMIDs in test_ground_truth.json."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise RecordError(path, None, None, "expected a JSON object keyed by PMID")
    test_ids = _pubmedqa_split(path, split)
    for pmid, rec in data.items():
        if test_ids is not None and (pmid in test_ids) != (split == "test"):
            continue
        if not isinstance(rec, dict):
            raise RecordError(path, pmid, None, "expected an object")
        contexts = rec.get("CONTEXTS")
        if not isinstance(contexts, list) or not all(isinstance(c, str) for c in contexts):
            raise RecordError(path, pmid, "CONTEXTS", "expected a list of strings")
        decision = rec.get("final_decision")
        if decision not in ("yes", "no", "maybe"):
            raise RecordError(path, pmid, "final_decision", f"{decision!r} is not yes/no/maybe")
        yield _make(path, pmid, id=f"{source}-{pmid}", question=_str_field(path, pmid, rec, "QUESTION"),
                    options={"A": "yes", "B": "no", "C": "maybe"}, answer="ABC"["yes no maybe".split().index(decision)],
                    context="\n".join(contexts), explanation=_str_field(path, pmid, rec, "LONG_ANSWER", optional=True),
                    source=source)


@_refusing_empty
def load_mmlu_csv(path: Path, source: str = "mmlu_medical") -> Iterator[MCQ]:
    """MMLU's original CSV: no header; question, four options, answer letter."""
    subject = path.stem.removesuffix("_test").removesuffix("_dev").removesuffix("_val")
    with open_text(path, newline="") as f:
        for row_no, row in enumerate(csv.reader(f), 1):
            if len(row) != 6:
                raise RecordError(path, row_no, None, f"expected 6 columns (question, A-D, answer), got {len(row)}")
            opts = _options_from_list(path, row_no, row[1:5], "A-D")
            yield _make(path, row_no, id=f"{source}-{subject}-{row_no}", question=row[0].strip(), options=opts,
                        answer=_answer_letter(path, row_no, row[5], "answer", 4, None), subject=subject, source=source)


@_refusing_empty
def load_headqa(path: Path, source: str = "headqa") -> Iterator[MCQ]:
    """HEAD-QA JSON: exams -> data; `ra` is the aid of the right answer, options have 4 or 5 answers."""
    data = read_json(path)
    exams = data.get("exams") if isinstance(data, dict) else None
    if not isinstance(exams, dict):
        raise RecordError(path, None, "exams", "missing or not an object")
    for exam_name, exam in exams.items():
        for i, rec in enumerate(exam.get("data") or []):
            where = f"{exam_name}/{rec.get('qid', i)}"
            answers = rec.get("answers")
            if not isinstance(answers, list) or not answers:
                raise RecordError(path, where, "answers", "missing or empty")
            opts = _options_from_list(path, where, [a.get("atext") for a in answers], "answers")
            aids = [str(a.get("aid")) for a in answers]
            if str(rec.get("ra")) not in aids:
                raise RecordError(path, where, "ra", f"{rec.get('ra')!r} is not an aid among {aids}")
            yield _make(path, where, id=f"{source}-{where}", question=_str_field(path, where, rec, "qtext"),
                        options=opts, answer=LETTERS[aids.index(str(rec["ra"]))],
                        subject=exam.get("category"), source=source)


@_refusing_empty
def load_aloe_json(path: Path, source: str | None = None) -> Iterator[MCQ]:
    """HPAI prompt_engine layout: {ID: {question, options {A..}, correct_answer, [context], ...}}.

    Also covers CareQA (with `category`) and PubMedQA (options as a dict-literal string, context as
    a JSON-encoded list of abstract sections).
    """
    data = read_json(path)
    if not isinstance(data, dict):
        raise RecordError(path, None, None, "expected a JSON object keyed by question id")
    src = source or path.stem.removesuffix("_test").removesuffix("_val")
    for key, rec in data.items():
        if not isinstance(rec, dict):
            raise RecordError(path, key, None, "expected an object")
        opts = _options_from_dict(path, key, rec.get("options"))
        context = rec.get("context")
        if isinstance(context, str) and context.startswith("["):
            try:
                context = json.loads(context)
            except json.JSONDecodeError:
                pass
        if isinstance(context, list):
            context = "\n".join(map(str, context))
        yield _make(path, key, id=str(rec.get("id") or key), question=_str_field(path, key, rec, "question"),
                    options=opts, answer=_answer_letter(path, key, rec.get("correct_answer"), "correct_answer", len(opts), None),
                    context=context or None, subject=rec.get("category") or rec.get("subject"), source=src)


LOADERS: dict[str, Callable[..., Iterator[MCQ]]] = {
    "medqa": load_medqa,
    "medmcqa": load_medmcqa,
    "pubmedqa": load_pubmedqa,
    "mmlu_csv": load_mmlu_csv,
    "headqa": load_headqa,
    "aloe_json": load_aloe_json,
}
