"""An on-disk cache of completions keyed by (model, conversation, generation parameters).

SQLite in WAL mode: each finished completion is committed as it arrives, so a run killed midway
keeps everything it already paid for, and several processes can share one cache.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from aloe.models.generator import GenParams, Generator, Messages


def completion_key(model: str, conversation: Messages, params: GenParams) -> str:
    blob = json.dumps({"model": model, "messages": conversation, "params": params.key()},
                      sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


class CompletionCache:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=60)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS completions (key TEXT PRIMARY KEY, text TEXT NOT NULL)")
        self._db.commit()

    def get_many(self, keys: Sequence[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        with self._lock:
            for start in range(0, len(keys), 500):
                chunk = list(keys[start:start + 500])
                q = f"SELECT key, text FROM completions WHERE key IN ({','.join('?' * len(chunk))})"
                out.update(self._db.execute(q, chunk).fetchall())
        return out

    def put_many(self, items: Sequence[tuple[str, str]]) -> None:
        with self._lock:
            self._db.executemany("INSERT OR REPLACE INTO completions VALUES (?, ?)", items)
            self._db.commit()

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM completions").fetchone()[0])


class CachedGenerator:
    """Answers what the cache holds and asks the wrapped generator only for the rest."""

    def __init__(self, inner: Generator, cache_dir: str | Path, identity: str | None = None):
        # Keys use `identity` (e.g. the weights' fingerprint) when given: a name or a path alone would
        # let a model retrained into the same folder reuse its predecessor's answers.
        self.inner, self.name = inner, inner.name
        self.identity = identity or inner.name
        self.cache = CompletionCache(Path(cache_dir) / "completions.sqlite")
        self.hits = self.misses = 0

    def chat(self, conversations: Sequence[Messages], params: GenParams,
             on_done: Callable[[list[int], list[str]], None] | None = None) -> list[str]:
        keys = [completion_key(self.identity, list(c), params) for c in conversations]
        known = self.cache.get_many(keys)
        out = [known.get(k) for k in keys]
        todo = [i for i, t in enumerate(out) if t is None]
        self.hits += len(conversations) - len(todo)
        self.misses += len(todo)
        if known and on_done is not None:
            done = [i for i, t in enumerate(out) if t is not None]
            on_done(done, [out[i] for i in done])  # type: ignore[misc]

        def store(local: list[int], texts: list[str]) -> None:
            idx = [todo[j] for j in local]
            self.cache.put_many([(keys[i], t) for i, t in zip(idx, texts, strict=True)])
            for i, t in zip(idx, texts, strict=True):
                out[i] = t
            if on_done is not None:
                on_done(idx, texts)

        if todo:
            self.inner.chat([conversations[i] for i in todo], params, on_done=store)
        return out  # type: ignore[return-value]
