"""Open-ended QA sets as data: each names its files (in ../shared/data's layout) and a row mapper.

The package ships small slices in the same layout under src/aloe/data/openended, so the demo and
the tests run offline; `--data-dir ../shared/data` evaluates on the full sets. A user's own set is
a JSONL of `{"id", "question", "reference"?, "specialty"?}` passed as `jsonl:PATH`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aloe.io import RecordError, iter_jsonl, read_json

PACKAGED_DATA = Path(__file__).resolve().parent.parent.parent / "data" / "openended"


@dataclass
class OpenQA:
    """A free-text question; `reference` is None where the source has no reference answer."""

    id: str
    question: str
    reference: str | None
    source: str
    specialty: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def _required(path: Path, where: str | int, row: Mapping[str, Any], key: str) -> str:
    value = row.get(key)
    if not isinstance(value, str) or not value.strip():
        raise RecordError(path, where, key, "expected a non-empty string")
    return value.strip()


def _optional(path: Path, where: str | int, row: Mapping[str, Any], key: str) -> str | None:
    return None if row.get(key) is None else _required(path, where, row, key)


def _rows_json_object(path: Path) -> Iterator[tuple[str | int, Mapping[str, Any]]]:
    data = read_json(path)
    if not isinstance(data, dict):
        raise RecordError(path, None, None, "expected a JSON object {id: record}")
    for key, row in data.items():
        if not isinstance(row, dict):
            raise RecordError(path, key, None, "expected an object")
        yield key, row


def _rows_jsonl(path: Path) -> Iterator[tuple[str | int, Mapping[str, Any]]]:
    yield from iter_jsonl(path)


def _openmedqa(path: Path, where: str | int, row: Mapping[str, Any]) -> OpenQA:
    return OpenQA(id=str(row.get("id") or f"{path.stem}-{where}"), question=_required(path, where, row, "question"),
                  reference=_required(path, where, row, "correct_answer"), source="openmedqa")


def _liveqa(path: Path, where: str | int, row: Mapping[str, Any]) -> OpenQA:
    # The NIST paraphrase is the consumer's question without its typos and greetings.
    question = row.get("nist_paraphrase") or row.get("message")
    answers = row.get("reference_answers") or []
    if not isinstance(question, str) or not question.strip():
        raise RecordError(path, where, "nist_paraphrase", "expected a non-empty string (or `message`)")
    ref = answers[0].get("answer") if answers and isinstance(answers[0], dict) else None
    return OpenQA(id=str(row.get("qid") or f"{path.stem}-{where}"), question=question.strip(), reference=ref or None,
                  source="liveqa_medical", meta={"types": row.get("types", [])})


def _medquad(path: Path, where: str | int, row: Mapping[str, Any]) -> OpenQA:
    return OpenQA(id=f"medquad-{row.get('id') or where}", question=_required(path, where, row, "question"),
                  reference=_required(path, where, row, "answer"), source="medquad",
                  meta={"qtype": row.get("qtype"), "focus": row.get("focus")})


def _generic(path: Path, where: str | int, row: Mapping[str, Any]) -> OpenQA:
    return OpenQA(id=str(row.get("id") or f"{path.stem}-{where}"), question=_required(path, where, row, "question"),
                  reference=_optional(path, where, row, "reference"), source=path.stem,
                  specialty=_optional(path, where, row, "specialty"))


@dataclass(frozen=True)
class OpenSet:
    name: str
    files: tuple[str, ...]  # candidate paths under the data dir; the first that exists is read
    reader: Callable[[Path], Iterator[tuple[str | int, Mapping[str, Any]]]]
    to_record: Callable[[Path, str | int, Mapping[str, Any]], OpenQA]
    note: str = ""

    def load(self, data_dir: Path | None = None) -> list[OpenQA]:
        root = data_dir or PACKAGED_DATA
        for rel in self.files:
            path = root / rel
            if path.is_file():
                return [self.to_record(path, where, row) for where, row in self.reader(path)]
        raise FileNotFoundError(f"no data for {self.name} under {root}: expected {' or '.join(self.files)}")


OPEN_SETS: dict[str, OpenSet] = {s.name: s for s in [
    OpenSet("openmedqa", ("aloe_prompt_engine/openmedqa/openmedqa_test.json",), _rows_json_object, _openmedqa,
            "MedQA test rewritten as open questions with a short reference answer (HPAI-BSC)"),
    OpenSet("liveqa_medical", ("liveqa_medical/liveqa_medical_test.jsonl",), _rows_jsonl, _liveqa,
            "TREC 2017 LiveQA consumer questions; most have no reference answer in the shared copy"),
    OpenSet("medquad", ("medquad/medquad_heldout.jsonl", "medquad/medquad_answered.jsonl"), _rows_jsonl, _medquad,
            "MedQuAD; the packaged slice holds items not used by aloe's training or curation slices"),
]}


def load_open_set(name: str, data_dir: Path | None = None, limit: int | None = None) -> list[OpenQA]:
    """A registered set by name, or a user's JSONL as `jsonl:PATH`."""
    if name.startswith("jsonl:"):
        path = Path(name.removeprefix("jsonl:"))
        items = [_generic(path, where, row) for where, row in _rows_jsonl(path)]
    elif name in OPEN_SETS:
        items = OPEN_SETS[name].load(data_dir)
    else:
        raise ValueError(f"unknown open-ended set {name!r}; known: {', '.join(OPEN_SETS)} or jsonl:PATH")
    return items[:limit] if limit is not None else items
