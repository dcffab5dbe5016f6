"""Source adapters: each training-side format becomes Items, its quirks handled once, here.

Formats are a registry (name -> reader). MCQ formats reuse the benchmark loaders, so a MedQA dev
file is read exactly as the MedQA test split is; QA pairs and dialogues become chats directly.
Paths are relative to a data directory laid out like ../shared/data; the package ships small slices
in that layout (src/aloe/data/curate) for the demo and the tests.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from itertools import islice
from pathlib import Path
from typing import Any

from aloe.curate.config import SourceConfig
from aloe.curate.items import Item
from aloe.io import RecordError, iter_jsonl, read_json, require_file
from aloe.records import LETTERS, MCQ

PACKAGED_DATA = Path(__file__).resolve().parent.parent / "data" / "curate"

Reader = Callable[[Path, SourceConfig], Iterator[Item]]


def _text(path: Path, where: str | int, rec: Mapping[str, Any], key: str) -> str:
    val = rec.get(key)
    if not isinstance(val, str) or not val.strip():
        raise RecordError(path, where, key, "missing, empty or not text")
    return val


def _chat(src: SourceConfig, rid: str, prompt: str, response: str, system: str | None = None) -> Item:
    msgs = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
    return Item(id=f"{src.name}-{rid}", source=src.name, group=src.group, messages=msgs)


def _mcq_item(src: SourceConfig, mcq: MCQ) -> Item:
    return Item(id=f"{src.name}-{mcq.id}", source=src.name, group=src.group, mcq=mcq, cot=src.cot)


def read_medquad(path: Path, src: SourceConfig) -> Iterator[Item]:
    """MedQuAD answered JSONL: {id, question, answer, source, focus, qtype, ...}."""
    for line, rec in iter_jsonl(path):
        item = _chat(src, str(rec.get("id", line)), _text(path, line, rec, "question"), _text(path, line, rec, "answer"))
        item.meta = {k: rec[k] for k in ("source", "focus", "qtype") if rec.get(k)}
        yield item


def read_alpaca(path: Path, src: SourceConfig) -> Iterator[Item]:
    """Alpaca-style JSON list {instruction, input, output} (WikiDoc patient info, ChatDoctor).

    The constant instruction becomes the system prompt; the input is the user's turn.
    """
    data = read_json(path)
    if not isinstance(data, list):
        raise RecordError(path, None, None, "expected a JSON list of {instruction, input, output}")
    for i, rec in enumerate(data):
        if not isinstance(rec, dict):
            raise RecordError(path, i, None, "expected an object")
        instruction = (rec.get("instruction") or "").strip()
        user = (rec.get("input") or "").strip()
        if not user:  # instruction-only records: the instruction is the question
            user, instruction = _text(path, i, rec, "instruction"), ""
        yield _chat(src, str(i), user, _text(path, i, rec, "output"),
                    system=instruction if src.options.get("instruction_as_system", True) else None)


def read_ultramedical(path: Path, src: SourceConfig) -> Iterator[Item]:
    """UltraMedical JSON list {id, type, conversations [{from: human|gpt, value}]}."""
    data = read_json(path)
    if not isinstance(data, list):
        raise RecordError(path, None, None, "expected a JSON list")
    roles = {"human": "user", "gpt": "assistant", "system": "system"}
    for i, rec in enumerate(data):
        turns = rec.get("conversations") if isinstance(rec, dict) else None
        if not isinstance(turns, list) or not turns:
            raise RecordError(path, i, "conversations", "missing or empty")
        msgs = []
        for j, t in enumerate(turns):
            if t.get("from") not in roles or not isinstance(t.get("value"), str):
                raise RecordError(path, i, f"conversations[{j}]", f"unknown role {t.get('from')!r} or no text")
            msgs.append({"role": roles[t["from"]], "content": t["value"]})
        yield Item(id=f"{src.name}-{rec.get('id', i)}", source=src.name, group=src.group, messages=msgs,
                   meta={"type": rec.get("type")})


_HH_TURN = re.compile(r"\n\n(Human|Assistant): ")


def read_hh_rlhf(path: Path, src: SourceConfig) -> Iterator[Item]:
    """Anthropic HH-RLHF JSONL {chosen, rejected}: the chosen transcript as a multi-turn chat."""
    for line, rec in iter_jsonl(path):
        parts = _HH_TURN.split(_text(path, line, rec, "chosen"))
        if len(parts) < 3 or parts[0].strip():
            raise RecordError(path, line, "chosen", "not a '\\n\\nHuman: ... \\n\\nAssistant: ...' transcript")
        msgs = [{"role": "user" if who == "Human" else "assistant", "content": text.strip()}
                for who, text in zip(parts[1::2], parts[2::2], strict=True)]
        yield Item(id=f"{src.name}-{line}", source=src.name, group=src.group, messages=msgs)


def _mcq_reader(loader: str) -> Reader:
    def read(path: Path, src: SourceConfig) -> Iterator[Item]:
        from aloe.evaluate.loaders import LOADERS

        for mcq in LOADERS[loader](path, source=src.name, **src.options):
            yield _mcq_item(src, mcq)
    read.__doc__ = f"MCQs in the {loader!r} benchmark format."
    return read


def _rows_to_items(path: Path | str, src: SourceConfig, rows: Iterator[tuple[int | str, Mapping[str, Any]]]) -> Iterator[Item]:
    """Generic rows mapped through `columns`: messages, or prompt/response[/system], or question/options/answer."""
    cols = src.columns
    for where, row in rows:
        rid = str(row.get(cols["id"], where)) if "id" in cols else str(where)
        if "messages" in cols:
            msgs = row.get(cols["messages"])
            if not isinstance(msgs, list) or not all(isinstance(m, Mapping) and {"role", "content"} <= set(m) for m in msgs):
                raise RecordError(path, where, cols["messages"], "expected a list of {role, content}")
            yield Item(id=f"{src.name}-{rid}", source=src.name, group=src.group,
                       messages=[{"role": m["role"], "content": m["content"]} for m in msgs])
        elif {"prompt", "response"} <= set(cols):
            system = row.get(cols["system"]) if "system" in cols else None
            yield _chat(src, rid, _text(Path(path), where, row, cols["prompt"]),
                        _text(Path(path), where, row, cols["response"]), system=system)
        elif {"question", "options", "answer"} <= set(cols):
            opts = row.get(cols["options"])
            if isinstance(opts, list):
                opts = {LETTERS[k]: str(t) for k, t in enumerate(opts)}
            if not isinstance(opts, Mapping):
                raise RecordError(path, where, cols["options"], "expected a list or a letter -> text object")
            answer = row.get(cols["answer"])
            if isinstance(answer, int):
                answer = LETTERS[answer - int(src.options.get("answer_base", 0))]
            try:
                mcq = MCQ(id=rid, question=_text(Path(path), where, row, cols["question"]), options=dict(opts),
                          answer=str(answer), source=src.name)
            except ValueError as e:
                field, _, problem = str(e).partition(": ")
                raise RecordError(path, where, field, problem) from None
            yield _mcq_item(src, mcq)
        else:
            raise ValueError(f"source {src.name!r}: columns must name `messages`, or `prompt` and `response`, "
                             f"or `question`, `options` and `answer`; got {sorted(cols)}")


def read_jsonl(path: Path, src: SourceConfig) -> Iterator[Item]:
    return _rows_to_items(path, src, iter_jsonl(path))


def read_parquet(path: Path, src: SourceConfig) -> Iterator[Item]:
    import pyarrow.parquet as pq

    table = pq.read_table(require_file(path))
    return _rows_to_items(path, src, enumerate(table.to_pylist(), 1))


def read_hub(path: Path, src: SourceConfig) -> Iterator[Item]:
    """A hub dataset id in `path` (needs a connection or a warm hub cache); options: config, split."""
    from datasets import load_dataset

    ds = load_dataset(str(path), src.options.get("config"), split=src.options.get("split", "train"))
    return _rows_to_items(f"hub:{path}", src, enumerate(ds))


READERS: dict[str, Reader] = {
    "medquad": read_medquad,
    "alpaca": read_alpaca,
    "ultramedical": read_ultramedical,
    "hh_rlhf": read_hh_rlhf,
    "medqa": _mcq_reader("medqa"),
    "medmcqa": _mcq_reader("medmcqa"),
    "pubmedqa": _mcq_reader("pubmedqa"),
    "headqa": _mcq_reader("headqa"),
    "aloe_json": _mcq_reader("aloe_json"),
    "mmlu_csv": _mcq_reader("mmlu_csv"),
    "jsonl": read_jsonl,
    "parquet": read_parquet,
    "hub": read_hub,
}


def source_path(src: SourceConfig, data_dir: Path | None = None) -> Path:
    """Where a source's file lies: relative to the data dir (default: the packaged slices); a hub id as is."""
    return Path(src.path) if src.format == "hub" else (data_dir or PACKAGED_DATA) / src.path


def load_source(src: SourceConfig, data_dir: Path | None = None) -> list[Item]:
    if src.format not in READERS:
        raise ValueError(f"source {src.name!r}: unknown format {src.format!r}; known: {', '.join(READERS)}")
    path = source_path(src, data_dir)
    if src.format != "hub":
        require_file(path, f"source {src.name!r} file")
    return list(islice(READERS[src.format](path, src), src.limit))


def read_items(path: str | Path) -> list[Item]:
    """Items from a JSONL written by `write_items` (the subcommands' interchange format)."""
    out = []
    for line, rec in iter_jsonl(path):
        try:
            out.append(Item.from_dict(rec))
        except (KeyError, ValueError, TypeError) as e:
            raise RecordError(path, line, None, f"not a curation item: {e}") from None
    return out
