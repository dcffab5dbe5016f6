"""Source adapters: each training-side format becomes Items, its quirks handled once, here.

Formats are a registry (name -> reader). MCQ formats reuse the benchmark loaders, so a MedQA dev
file is read exactly as the MedQA test split is; QA pairs and dialogues become chats directly.
Paths are relative to a data directory laid out like ../shared/data; the package ships small slices
in that layout (src/aloe/data/curate) for the demo and the tests.

Corpus-scale sources are streamed, never loaded whole: the generic formats (jsonl, parquet, arrow)
take a file or a folder of shards and read them row batch by row batch, and `hub` datasets come
through `datasets.load_dataset(..., streaming=True)`, so a `limit` reads only that many rows.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Mapping
from itertools import islice
from pathlib import Path
from typing import Any

from aloe.curate.config import SourceConfig
from aloe.curate.items import Item
from aloe.io import RecordError, iter_jsonl, read_json
from aloe.records import LETTERS, MCQ

PACKAGED_DATA = Path(__file__).resolve().parent.parent / "data" / "curate"

Reader = Callable[[Path, SourceConfig], Iterator[Item]]


def _text(path: str | Path, where: str | int, rec: Mapping[str, Any], key: str) -> str:
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


_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


def _turns(path: str | Path, where: str | int, field: str, turns: Any) -> list[dict[str, str]]:
    """Chat turns as {role, content}, or ShareGPT's {from: human|gpt|system, value}, to messages."""
    if not isinstance(turns, list) or not turns:
        raise RecordError(path, where, field, "missing or empty")
    msgs = []
    for j, t in enumerate(turns):
        role = (t.get("role") or t.get("from")) if isinstance(t, Mapping) else None
        text = t.get("content", t.get("value")) if isinstance(t, Mapping) else None
        if role not in _ROLES or not isinstance(text, str):
            raise RecordError(path, where, f"{field}[{j}]", f"unknown role {role!r} or no text")
        msgs.append({"role": _ROLES[role], "content": text})
    return msgs


def read_ultramedical(path: Path, src: SourceConfig) -> Iterator[Item]:
    """UltraMedical JSON list {id, type, conversations [{from: human|gpt, value}]}."""
    data = read_json(path)
    if not isinstance(data, list):
        raise RecordError(path, None, None, "expected a JSON list")
    for i, rec in enumerate(data):
        turns = rec.get("conversations") if isinstance(rec, dict) else None
        yield Item(id=f"{src.name}-{rec.get('id', i)}", source=src.name, group=src.group,
                   messages=_turns(path, i, "conversations", turns), meta={"type": rec.get("type")})


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
        from aloe.mcq.loaders import LOADERS

        for mcq in LOADERS[loader](path, source=src.name, **src.options):
            yield _mcq_item(src, mcq)
    read.__doc__ = f"MCQs in the {loader!r} benchmark format."
    return read


Rows = Iterator[tuple[int, Mapping[str, Any]]]
_ROW_BATCH = 1024  # rows decoded at a time from a parquet/arrow shard


def _layout(src: SourceConfig) -> str:
    cols = set(src.columns)
    if "messages" in cols:
        return "messages"
    if {"question", "options", "answer"} <= cols:
        return "mcq"
    if {"prompt", "response"} <= cols or {"question", "answer"} <= cols:
        return "chat"
    raise ValueError(f"source {src.name!r}: columns must name `messages`, or `prompt` and `response` (or "
                     f"`question` and `answer`), or `question`, `options` and `answer`; got {sorted(cols)}")


def _rows_to_items(path: str | Path, src: SourceConfig, rows: Rows, id_prefix: str = "") -> Iterator[Item]:
    """Generic rows mapped through `columns`; `path` and the row number locate a bad row in errors.

    Ids come from the `id` column, else from the row number behind `id_prefix` (the shard's name)."""
    cols, layout = src.columns, _layout(src)
    for where, row in rows:
        key = row.get(str(cols["id"])) if "id" in cols else None
        rid = str(key) if key is not None else f"{id_prefix}{where}"
        if layout == "messages":
            yield Item(id=f"{src.name}-{rid}", source=src.name, group=src.group,
                       messages=_turns(path, where, str(cols["messages"]), row.get(str(cols["messages"]))))
        elif layout == "chat":
            system = row.get(str(cols["system"])) if "system" in cols else None
            prompt, response = ("prompt", "response") if "prompt" in cols else ("question", "answer")
            yield _chat(src, rid, _text(path, where, row, str(cols[prompt])),
                        _text(path, where, row, str(cols[response])), system=system)
        else:
            yield _mcq_item(src, _row_mcq(path, where, row, src, rid))


def _row_mcq(path: str | Path, where: int, row: Mapping[str, Any], src: SourceConfig, rid: str) -> MCQ:
    cols = src.columns
    if isinstance(cols["options"], list):  # one column per option (MedMCQA's opa..opd)
        opts: Any = {LETTERS[k]: _text(path, where, row, c) for k, c in enumerate(cols["options"])}
    else:
        opts = row.get(cols["options"])
    if isinstance(opts, list):
        opts = {LETTERS[k]: str(t) for k, t in enumerate(opts)}
    if not isinstance(opts, Mapping):
        raise RecordError(path, where, str(cols["options"]), "expected a list or a letter -> text object")
    answer = row.get(str(cols["answer"]))
    if answer is None:
        raise RecordError(path, where, str(cols["answer"]), "missing")
    if isinstance(answer, int):
        answer = LETTERS[answer - int(src.options.get("answer_base", 0))]
    try:
        return MCQ(id=rid, question=_text(path, where, row, str(cols["question"])), options=dict(opts),
                   answer=str(answer), source=src.name)
    except ValueError as e:
        field, _, problem = str(e).partition(": ")
        raise RecordError(path, where, field, problem) from None


def _shards(path: Path, suffixes: tuple[str, ...]) -> list[Path]:
    """A file as is; a folder's files with these suffixes, in name order (shard order)."""
    if path.is_file():
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith(suffixes))
    if not files:
        raise FileNotFoundError(f"no {' / '.join(suffixes)} files under {path}")
    return files


def _numbered(batches: Iterator[Any]) -> Rows:
    """Rows of Arrow record batches, numbered from 1 within their file like JSONL lines."""
    n = 0
    for batch in batches:
        for row in batch.to_pylist():
            n += 1
            yield n, row


def _parquet_rows(path: Path) -> Rows:
    import pyarrow.parquet as pq

    with pq.ParquetFile(path) as f:
        yield from _numbered(f.iter_batches(batch_size=_ROW_BATCH))


def _arrow_rows(path: Path) -> Rows:
    """Arrow IPC, file or stream layout (`datasets` writes streams), memory-mapped batch by batch."""
    import pyarrow as pa

    with pa.memory_map(str(path)) as mm:
        try:
            reader = pa.ipc.open_file(mm)
            batches: Iterator[Any] = (reader.get_batch(i) for i in range(reader.num_record_batches))
        except pa.ArrowInvalid:
            mm.seek(0)
            batches = iter(pa.ipc.open_stream(mm))
        yield from _numbered(batches)


def _local_reader(suffixes: tuple[str, ...], rows: Callable[[Path], Rows], doc: str) -> Reader:
    def read(path: Path, src: SourceConfig) -> Iterator[Item]:
        for f in _shards(path, suffixes):
            # row numbers restart in every shard: the shard's name keeps default ids unique
            prefix = "" if f == path else f"{f.relative_to(path).as_posix()}:"
            yield from _rows_to_items(f, src, rows(f), prefix)
    read.__doc__ = doc
    return read


def _offline() -> bool:
    from datasets import config

    return config.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}


def _unavailable(src: SourceConfig, err: Exception) -> ConnectionError:
    from datasets import config

    how = ("HF_HUB_OFFLINE is set, so only the local cache is read" if _offline()
           else "the hub could not be reached and it is not in the local cache")
    return ConnectionError(f"source {src.name!r}: hub dataset {src.dataset!r} (config {src.config!r}, split "
                           f"{src.split or 'train'!r}) is unavailable: {how} ({config.HF_DATASETS_CACHE}). "
                           f"Download it once online, or point the source at a local copy. Cause: {err}")


def read_hub(path: Path, src: SourceConfig) -> Iterator[Item]:
    """A hub dataset, streamed: rows arrive as they are read, from the hub or the warm local cache."""
    from datasets import load_dataset
    from datasets.exceptions import DatasetsError

    split = src.split or "train"
    try:
        ds = load_dataset(str(src.dataset), src.config, split=split, streaming=True)
    except (OSError, DatasetsError) as e:
        raise _unavailable(src, e) from e

    def rows() -> Rows:
        try:  # a stream fetches its shards lazily, so the network can fail here too
            yield from enumerate(ds, 1)
        except (OSError, DatasetsError) as e:
            raise _unavailable(src, e) from e

    label = f"hub:{src.dataset}" + (f"/{src.config}" if src.config else "") + f"[{split}]"
    return _rows_to_items(label, src, rows())


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
    "jsonl": _local_reader((".jsonl", ".jsonl.gz"), iter_jsonl, "JSONL rows: a file or a folder of shards."),
    "parquet": _local_reader((".parquet",), _parquet_rows, "Parquet rows: a file or a folder of shards."),
    "arrow": _local_reader((".arrow",), _arrow_rows, "Arrow IPC rows: a file or a folder of shards."),
    "hub": read_hub,
}


def source_path(src: SourceConfig, data_dir: Path | None = None) -> Path:
    """Where a source lies: relative to the data dir (default: the packaged slices); a hub id as is."""
    return Path(src.path) if src.format == "hub" else (data_dir or PACKAGED_DATA) / src.path


def iter_source(src: SourceConfig, data_dir: Path | None = None) -> Iterator[Item]:
    """A source's items as they are read, at most `limit` of them."""
    if src.format not in READERS:
        raise ValueError(f"source {src.name!r}: unknown format {src.format!r}; known: {', '.join(READERS)}")
    path = source_path(src, data_dir)
    if src.format != "hub" and not path.exists():
        raise FileNotFoundError(f"source {src.name!r} file (or folder) not found: {path}")
    return islice(READERS[src.format](path, src), src.limit)


def load_source(src: SourceConfig, data_dir: Path | None = None) -> list[Item]:
    return list(iter_source(src, data_dir))


def read_items(path: str | Path) -> list[Item]:
    """Items from a JSONL written by `write_items` (the subcommands' interchange format)."""
    out = []
    for line, rec in iter_jsonl(path):
        try:
            out.append(Item.from_dict(rec))
        except (KeyError, ValueError, TypeError) as e:
            raise RecordError(path, line, None, f"not a curation item: {e}") from None
    return out
