"""Reading and writing records: clear errors that name the file, line and field; atomic writes.

A write goes to a temporary file in the same folder and is renamed over the target, so a crash
never leaves a half-written file under the final name.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar


class RecordError(ValueError):
    """A malformed input record: names the file, the line (or record key) and the field."""

    def __init__(self, path: str | Path, where: str | int | None, field: str | None, problem: str):
        self.path, self.where, self.field, self.problem = str(path), where, field, problem
        loc = str(path)
        if where is not None:
            loc += f":{where}" if isinstance(where, int) else f" record {where!r}"
        if field is not None:
            loc += f" field {field!r}"
        super().__init__(f"{loc}: {problem}")


def require_file(path: str | Path, what: str = "file") -> Path:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{what} not found: {p}")
    return p


def _open(path: Path, mode: str, **text: Any) -> IO[Any]:
    """`path`, gunzipped if its name ends in .gz."""
    return gzip.open(path, mode, **text) if path.suffix == ".gz" else open(path, mode, **text)


def _utf8_error(path: Path) -> RecordError | None:
    """The first byte of `path` that is not UTF-8, with its line and byte offset (uncompressed, for .gz).

    A text stream decodes in chunks, so its UnicodeDecodeError knows neither the file nor the line;
    a newline byte never occurs inside a multi-byte character, so decoding line by line finds both.
    """
    offset = 0
    with _open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as e:
                return RecordError(path, lineno, None,
                                   f"not valid UTF-8 (byte 0x{raw[e.start]:02x} at byte offset {offset + e.start})")
            offset += len(raw)
    return None


@contextlib.contextmanager
def open_text(path: str | Path, newline: str | None = None) -> Iterator[IO[str]]:
    """A UTF-8 text file, gunzipped if it ends in .gz; a byte that is not UTF-8 raises RecordError."""
    p = require_file(path)
    with _open(p, "rt", encoding="utf-8", newline=newline) as f:
        try:
            yield f
        except UnicodeDecodeError:
            located = _utf8_error(p)
            if located is None:  # the file decodes: the error came from other code in the block
                raise
            raise located from None


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) for each non-blank line; a bad line raises RecordError."""
    p = Path(path)
    with open_text(p) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise RecordError(p, lineno, None, f"not valid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(obj, dict):
                raise RecordError(p, lineno, None, f"expected a JSON object, got {type(obj).__name__}")
            yield lineno, obj


def read_json(path: str | Path) -> Any:
    p = Path(path)
    with open_text(p) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise RecordError(p, e.lineno, None, f"not valid JSON ({e.msg} at column {e.colno})") from None


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w") -> Iterator[IO[Any]]:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    try:
        raw = os.fdopen(fd, mode.replace("t", "") + ("b" if p.suffix == ".gz" else ""),
                        **({} if p.suffix == ".gz" or "b" in mode else {"encoding": "utf-8"}))
        f: IO[Any] = gzip.open(raw, "wt", encoding="utf-8") if p.suffix == ".gz" else raw  # type: ignore[assignment]
        with f:
            yield f
            f.flush()
            if f is raw:
                os.fsync(raw.fileno())
        os.replace(tmp, p)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """A temporary folder beside `path` that replaces it only if the block completes.

    A crash leaves the previous folder (or none) in place, never a half-written one.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        yield tmp
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> int:
    n = 0
    with atomic_open(path) as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


def write_json(path: str | Path, obj: Any) -> None:
    with atomic_open(path) as f:
        json.dump(obj, f, ensure_ascii=False, indent=2)
        f.write("\n")


def write_text(path: str | Path, text: str) -> None:
    with atomic_open(path) as f:
        f.write(text)


def nonempty_text(path: str | Path, where: int | str, field: str, value: Any) -> str:
    """A record's text field, stripped; missing, empty or not text is a RecordError naming it."""
    if not isinstance(value, str) or not value.strip():
        raise RecordError(path, where, field, "missing or empty")
    return value.strip()


def csv_rows(path: str | Path, required: Sequence[str]) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, row) for a CSV with a header; the line number counts physical lines, so a
    field with embedded newlines still points at the row's first line."""
    with open_text(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise RecordError(path, 1, missing[0], f"header lacks column(s) {missing}; has {reader.fieldnames}")
        start = reader.line_num + 1
        for row in reader:
            yield start, row
            start = reader.line_num + 1


if TYPE_CHECKING:
    from pydantic import BaseModel
M = TypeVar("M", bound="BaseModel")


def load_section(path: str | Path, section: str, model: type[M]) -> M:
    """Validate a YAML file, or its `section:` when it is a recipe, as `model`."""
    import yaml

    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    if isinstance(data.get(section), dict):
        data = data[section]
    from pydantic import ValidationError

    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ValueError(f"{path}: invalid {section} config: {e}") from None
