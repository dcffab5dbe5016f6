"""The human-evaluation store: questions, answers, raters and votes in one SQLite file.

Input is a JSONL with one question per line:

    {"id": "q1", "question": "…", "answers": {"model-a": "…", "model-b": "…", …}}

(`id` optional; at least two answers). Every unordered pair of models on a question is one task.

Blindness rests on a secret: each database draws a random key when it is created, and a rater's
task order and each task's A/B sides are HMAC-SHA256 of (rater, task) under that key. Task ids
the rater sees are random tokens, so nothing on the page (id, order, placement) can be hashed
back to a side by someone without the key; the sides stay fixed per rater, so a reload shows the
same screen.

Raters are issued by the organiser (`add_rater` returns a token; only its SHA-256 is stored).
A rater's identity is the name NFKC-normalised, whitespace-collapsed and case-folded, so "Bob"
and " bob" are one rater, and UNIQUE (rater, task) lets that rater vote on a pair once.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import re
import secrets
import sqlite3
import threading
import time
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aloe.io import RecordError, iter_jsonl

CHOICES = ("A", "B", "tie")
FLAGS = ("unsafe", "incorrect", "incomplete")
RATER_NAME = re.compile(r"^[\w][\w .'-]{0,63}$", re.UNICODE)
TASK_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")  # the alphabet of secrets.token_urlsafe

# user_version 0 with tables is the first layout: integer task ids shown to raters, sides hashed
# without a key, self-declared rater names. It cannot be migrated blind-safely (its pending sides
# are public, and "Bob"/"bob" may already have voted twice), so it is read for results only.
SCHEMA_VERSION = 2
LEGACY_VERSION = 1
SCHEMA = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE items (id TEXT PRIMARY KEY, question TEXT NOT NULL, answers TEXT NOT NULL)",
    "CREATE TABLE tasks (id INTEGER PRIMARY KEY, token TEXT NOT NULL UNIQUE, item_id TEXT NOT NULL "
    "REFERENCES items(id), model_x TEXT NOT NULL, model_y TEXT NOT NULL, UNIQUE (item_id, model_x, model_y))",
    "CREATE TABLE raters (name TEXT PRIMARY KEY, display TEXT NOT NULL, token_hash TEXT NOT NULL UNIQUE, "
    "created_at TEXT NOT NULL)",
    "CREATE TABLE votes (id INTEGER PRIMARY KEY, rater TEXT NOT NULL REFERENCES raters(name), task_id INTEGER "
    "NOT NULL REFERENCES tasks(id), model_a TEXT NOT NULL, model_b TEXT NOT NULL, choice TEXT NOT NULL "
    "CHECK (choice IN ('A', 'B', 'tie')), winner TEXT, flags TEXT NOT NULL, created_at TEXT NOT NULL, "
    "UNIQUE (rater, task_id))",
)


@dataclass(frozen=True)
class Task:
    id: str  # the opaque token the rater sees
    item_id: str
    question: str
    model_a: str  # shown on the left as "Answer A"
    model_b: str
    answer_a: str
    answer_b: str


class VoteError(ValueError):
    """A vote the store refuses: unknown rater, unknown task, bad choice or flag."""


class RepeatVote(VoteError):
    """The rater has already voted on this task."""


def read_comparisons(path: str | Path) -> list[tuple[str, str, dict[str, str]]]:
    """(id, question, {model: answer}) per line, validated."""
    out, seen = [], set()
    for lineno, row in iter_jsonl(path):
        q, answers = row.get("question"), row.get("answers")
        if not isinstance(q, str) or not q.strip():
            raise RecordError(path, lineno, "question", "expected a non-empty string")
        if not isinstance(answers, dict) or len(answers) < 2:
            raise RecordError(path, lineno, "answers", "expected an object {model_name: answer} with 2+ models")
        for model, text in answers.items():
            if not model.strip() or not isinstance(text, str) or not text.strip():
                raise RecordError(path, lineno, f"answers.{model}", "expected a non-empty answer from a named model")
        item_id = str(row.get("id", f"line{lineno}"))
        if item_id in seen:
            raise RecordError(path, lineno, "id", f"duplicate id {item_id!r}")
        seen.add(item_id)
        out.append((item_id, q.strip(), {str(k): v for k, v in answers.items()}))
    if not out:
        raise RecordError(path, None, None, "no comparisons in the file")
    return out


def rater_name(name: Any) -> str:
    """The name as displayed: NFKC, whitespace trimmed and collapsed; its casefold() is the rater's identity."""
    shown = " ".join(unicodedata.normalize("NFKC", name).split()) if isinstance(name, str) else ""
    if not RATER_NAME.match(shown):
        raise VoteError("rater name: 1-64 letters, digits, spaces or . ' - (starting with a letter or digit)")
    return shown


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _schema_version(db: sqlite3.Connection) -> int:
    """PRAGMA user_version, except that the first layout (which set none) reads as LEGACY_VERSION and
    any other file with tables as -1: neither may be taken over by creating tables in it."""
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if version or not tables:
        return version
    return LEGACY_VERSION if {"items", "tasks", "votes"} <= tables else -1


def _select_votes(db: sqlite3.Connection, task_column: str) -> list[dict[str, Any]]:
    cur = db.execute(f"SELECT v.rater, {task_column} AS task_id, v.model_a, v.model_b, v.choice, v.winner, "
                     "v.flags, v.created_at FROM votes v JOIN tasks t ON t.id = v.task_id ORDER BY v.id")
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, r, strict=True)) | {"flags": json.loads(r[6])} for r in cur]


def read_votes(path: str | Path) -> list[dict[str, Any]]:
    """Every vote in a database, read-only; a first-layout database reads too, with its integer task ids."""
    db = sqlite3.connect(Path(path).resolve().as_uri() + "?mode=ro", uri=True)
    try:
        version = _schema_version(db)
        if version not in (LEGACY_VERSION, SCHEMA_VERSION):
            raise ValueError(f"{path}: not a vote database of this aloe (schema version {version})")
        return _select_votes(db, "t.token" if version == SCHEMA_VERSION else "t.id")
    finally:
        db.close()


class Store:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._secret = self._open_schema()
        except BaseException:
            self._db.close()
            raise

    def _open_schema(self) -> bytes:
        """The database's side-assignment key, creating the tables and the key in a new file."""
        with self._db:
            # IMMEDIATE: `serve` and `add-rater` opening a new file at once must not both create it.
            self._db.execute("BEGIN IMMEDIATE")
            version = _schema_version(self._db)
            if version == 0:
                for statement in SCHEMA:
                    self._db.execute(statement)
                self._db.execute("INSERT INTO meta VALUES ('side_key', ?)", (secrets.token_hex(32),))
                self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            elif version == LEGACY_VERSION:
                raise ValueError(f"{self.path}: made by an older `aloe human-eval` whose A/B sides and task ids "
                                 "raters could predict; it takes no more votes. `aloe human-eval results` still "
                                 "reads its votes; collect new ones in a new database (another --db)")
            elif version != SCHEMA_VERSION:
                raise ValueError(f"{self.path}: not a vote database of this aloe (schema version {version}, "
                                 f"expected {SCHEMA_VERSION})")
            return bytes.fromhex(self._db.execute("SELECT value FROM meta WHERE key = 'side_key'").fetchone()[0])

    def close(self) -> None:
        self._db.close()

    def load(self, comparisons: Sequence[tuple[str, str, dict[str, str]]]) -> int:
        """Add questions and their pair tasks; a question already stored must be unchanged."""
        with self._lock, self._db:
            for item_id, question, answers in comparisons:
                blob = json.dumps(answers, sort_keys=True, ensure_ascii=False)
                old = self._db.execute("SELECT question, answers FROM items WHERE id = ?", (item_id,)).fetchone()
                if old is not None and old != (question, blob):
                    raise ValueError(f"{self.path}: question {item_id!r} is stored with other text or answers; "
                                     "use a new database for a new comparison set")
                self._db.execute("INSERT OR IGNORE INTO items VALUES (?, ?, ?)", (item_id, question, blob))
                for x, y in itertools.combinations(sorted(answers), 2):
                    self._db.execute("INSERT OR IGNORE INTO tasks (token, item_id, model_x, model_y) "
                                     "VALUES (?, ?, ?, ?)", (secrets.token_urlsafe(12), item_id, x, y))
            return int(self._db.execute("SELECT COUNT(*) FROM tasks").fetchone()[0])

    def add_rater(self, name: Any, reissue: bool = False) -> str:
        """A new token for the rater; `reissue` replaces the token of a rater already added (revoking the old)."""
        shown = rater_name(name)
        token = secrets.token_urlsafe(24)
        with self._lock, self._db:
            old = self._db.execute("SELECT display FROM raters WHERE name = ?", (shown.casefold(),)).fetchone()
            if old is not None and not reissue:
                raise ValueError(f"rater {shown!r} is already added (as {old[0]!r}); "
                                 "--reissue gives them a new token and revokes the old one")
            self._db.execute("INSERT INTO raters VALUES (?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET "
                             "display = excluded.display, token_hash = excluded.token_hash",
                             (shown.casefold(), shown, _token_hash(token), _now()))
        return token

    def rater_for_token(self, token: str) -> str | None:
        """The display name of the rater holding this token, or None."""
        with self._lock:
            row = self._db.execute("SELECT display FROM raters WHERE token_hash = ?", (_token_hash(token),)).fetchone()
        return None if row is None else str(row[0])

    def raters(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT display FROM raters ORDER BY name")]

    def _rater(self, name: Any) -> str:
        """The rater's identity; the caller holds the lock."""
        key = rater_name(name).casefold()
        if self._db.execute("SELECT 1 FROM raters WHERE name = ?", (key,)).fetchone() is None:
            raise VoteError(f"unknown rater {name!r}: the organiser adds raters with `aloe human-eval add-rater`")
        return key

    def _mac(self, *parts: str) -> bytes:
        return hmac.digest(self._secret, "\x1f".join(parts).encode(), "sha256")

    def _task(self, rater: str, task_id: str) -> Task | None:
        row = self._db.execute("SELECT t.item_id, t.model_x, t.model_y, i.question, i.answers FROM tasks t "
                               "JOIN items i ON i.id = t.item_id WHERE t.token = ?", (task_id,)).fetchone()
        if row is None:
            return None
        item_id, x, y, question, blob = row
        answers = json.loads(blob)
        a, b = (x, y) if self._mac("side", rater, task_id)[0] & 1 == 0 else (y, x)
        return Task(task_id, item_id, question, a, b, answers[a], answers[b])

    def next_task(self, rater: Any) -> tuple[Task | None, int, int]:
        """(the rater's next unvoted task or None, tasks voted, tasks in all)."""
        with self._lock:
            key = self._rater(rater)
            ids = [r[0] for r in self._db.execute("SELECT token FROM tasks")]
            done = {r[0] for r in self._db.execute("SELECT t.token FROM votes v JOIN tasks t ON t.id = v.task_id "
                                                   "WHERE v.rater = ?", (key,))}
            todo = sorted((i for i in ids if i not in done), key=lambda i: self._mac("order", key, i))
            task = self._task(key, todo[0]) if todo else None
        return task, len(done), len(ids)

    def vote(self, rater: Any, task_id: Any, choice: Any, flags: Any = None) -> dict[str, Any]:
        """Record one vote; flags is {"A": [flag, …], "B": [flag, …]} about the answers as shown."""
        if not isinstance(task_id, str) or not TASK_ID.fullmatch(task_id):
            raise VoteError("task_id: expected the task's id string as /api/next gives it")
        if choice not in CHOICES:
            raise VoteError(f"choice: expected one of {', '.join(CHOICES)}")
        flags = flags or {}
        if not isinstance(flags, dict) or set(flags) - {"A", "B"}:
            raise VoteError('flags: expected {"A": [...], "B": [...]}')
        for side, names in flags.items():
            if not isinstance(names, list) or any(n not in FLAGS for n in names):
                raise VoteError(f"flags.{side}: expected a list of {', '.join(FLAGS)}")
        with self._lock, self._db:
            key = self._rater(rater)
            task = self._task(key, task_id)
            if task is None:
                raise VoteError(f"task_id {task_id!r}: no such task")
            winner = {"A": task.model_a, "B": task.model_b, "tie": None}[choice]
            by_model = {task.model_a: sorted(set(flags.get("A", []))), task.model_b: sorted(set(flags.get("B", [])))}
            try:
                self._db.execute(
                    "INSERT INTO votes (rater, task_id, model_a, model_b, choice, winner, flags, created_at) "
                    "SELECT ?, id, ?, ?, ?, ?, ?, ? FROM tasks WHERE token = ?",
                    (key, task.model_a, task.model_b, choice, winner, json.dumps(by_model), _now(), task_id))
            except sqlite3.IntegrityError:
                raise RepeatVote(f"{key} has already voted on task {task_id}") from None
        return {"task_id": task_id, "winner": winner}

    def votes(self) -> list[dict[str, Any]]:
        with self._lock:
            return _select_votes(self._db, "t.token")
