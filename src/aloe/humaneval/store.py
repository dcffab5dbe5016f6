"""The human-evaluation store: questions, answers and votes in one SQLite file.

Input is a JSONL with one question per line:

    {"id": "q1", "question": "…", "answers": {"model-a": "…", "model-b": "…", …}}

(`id` optional; at least two answers). Every unordered pair of models on a question is one task.
Each rater sees the tasks in their own shuffled order, and each task's two answers on sides that
are random but fixed for that rater (a hash of rater and task), so a reload shows the same screen
and a rater never learns a model's side. A UNIQUE (rater, task) constraint means the same rater
can never vote on the same pair twice.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aloe.io import RecordError, iter_jsonl

CHOICES = ("A", "B", "tie")
FLAGS = ("unsafe", "incorrect", "incomplete")
RATER_NAME = re.compile(r"^[\w][\w .'-]{0,63}$", re.UNICODE)

SCHEMA = """
CREATE TABLE IF NOT EXISTS items (id TEXT PRIMARY KEY, question TEXT NOT NULL, answers TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tasks (id INTEGER PRIMARY KEY, item_id TEXT NOT NULL REFERENCES items(id),
    model_x TEXT NOT NULL, model_y TEXT NOT NULL, UNIQUE (item_id, model_x, model_y));
CREATE TABLE IF NOT EXISTS votes (id INTEGER PRIMARY KEY, rater TEXT NOT NULL, task_id INTEGER NOT NULL
    REFERENCES tasks(id), model_a TEXT NOT NULL, model_b TEXT NOT NULL, choice TEXT NOT NULL
    CHECK (choice IN ('A', 'B', 'tie')), winner TEXT, flags TEXT NOT NULL, created_at TEXT NOT NULL,
    UNIQUE (rater, task_id));
"""


@dataclass(frozen=True)
class Task:
    id: int
    item_id: str
    question: str
    model_a: str  # shown on the left as "Answer A"
    model_b: str
    answer_a: str
    answer_b: str


class VoteError(ValueError):
    """A vote the store refuses: bad rater name, unknown task, bad choice or flag, or a repeat."""


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


def _h(*parts: str) -> int:
    return int.from_bytes(hashlib.sha256("\x1f".join(parts).encode()).digest()[:8], "big")


class Store:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(SCHEMA)

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
                    self._db.execute("INSERT OR IGNORE INTO tasks (item_id, model_x, model_y) VALUES (?, ?, ?)",
                                     (item_id, x, y))
            return int(self._db.execute("SELECT COUNT(*) FROM tasks").fetchone()[0])

    @staticmethod
    def check_rater(rater: Any) -> str:
        if not isinstance(rater, str) or not RATER_NAME.match(rater.strip()):
            raise VoteError("rater name: 1-64 letters, digits, spaces or . ' - (starting with a letter or digit)")
        return rater.strip()

    def _task(self, rater: str, task_id: int) -> Task | None:
        row = self._db.execute("SELECT t.item_id, t.model_x, t.model_y, i.question, i.answers FROM tasks t "
                               "JOIN items i ON i.id = t.item_id WHERE t.id = ?", (task_id,)).fetchone()
        if row is None:
            return None
        item_id, x, y, question, blob = row
        answers = json.loads(blob)
        a, b = (x, y) if _h("side", rater, str(task_id)) % 2 == 0 else (y, x)
        return Task(task_id, item_id, question, a, b, answers[a], answers[b])

    def next_task(self, rater: str) -> tuple[Task | None, int, int]:
        """(the rater's next unvoted task or None, tasks voted, tasks in all)."""
        rater = self.check_rater(rater)
        with self._lock:
            ids = [r[0] for r in self._db.execute("SELECT id FROM tasks")]
            done = {r[0] for r in self._db.execute("SELECT task_id FROM votes WHERE rater = ?", (rater,))}
            todo = sorted((i for i in ids if i not in done), key=lambda i: _h("order", rater, str(i)))
            task = self._task(rater, todo[0]) if todo else None
        return task, len(done), len(ids)

    def vote(self, rater: Any, task_id: Any, choice: Any, flags: Any = None) -> dict[str, Any]:
        """Record one vote; flags is {"A": [flag, …], "B": [flag, …]} about the answers as shown."""
        rater = self.check_rater(rater)
        if not isinstance(task_id, int) or isinstance(task_id, bool):
            raise VoteError("task_id: expected an integer")
        if choice not in CHOICES:
            raise VoteError(f"choice: expected one of {', '.join(CHOICES)}")
        flags = flags or {}
        if not isinstance(flags, dict) or set(flags) - {"A", "B"}:
            raise VoteError('flags: expected {"A": [...], "B": [...]}')
        for side, names in flags.items():
            if not isinstance(names, list) or any(n not in FLAGS for n in names):
                raise VoteError(f"flags.{side}: expected a list of {', '.join(FLAGS)}")
        with self._lock, self._db:
            task = self._task(rater, task_id)
            if task is None:
                raise VoteError(f"task {task_id}: no such task")
            winner = {"A": task.model_a, "B": task.model_b, "tie": None}[choice]
            by_model = {task.model_a: sorted(set(flags.get("A", []))), task.model_b: sorted(set(flags.get("B", [])))}
            try:
                self._db.execute(
                    "INSERT INTO votes (rater, task_id, model_a, model_b, choice, winner, flags, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (rater, task_id, task.model_a, task.model_b, choice, winner, json.dumps(by_model),
                     time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())))
            except sqlite3.IntegrityError:
                raise VoteError(f"{rater} has already voted on task {task_id}") from None
        return {"task_id": task_id, "winner": winner}

    def votes(self) -> list[dict[str, Any]]:
        with self._lock:
            cur = self._db.execute("SELECT rater, task_id, model_a, model_b, choice, winner, flags, created_at "
                                   "FROM votes ORDER BY id")
            cols = [d[0] for d in cur.description]
            return [dict(zip(cols, r, strict=True)) | {"flags": json.loads(r[6])} for r in cur]
