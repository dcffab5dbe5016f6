"""The vote store's rules and validation, the API's refusals, and the win-rate / Bradley-Terry figures."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import numpy as np
import pytest

from aloe.humaneval.app import make_server, serve_in_thread
from aloe.humaneval.results import bradley_terry, summarize_votes, win_rates
from aloe.humaneval.store import RepeatVote, Store, VoteError, read_comparisons
from aloe.io import RecordError


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture()
def store(tmp_path):
    s = Store(tmp_path / "v.sqlite")
    s.load(read_comparisons(_write(tmp_path / "in.jsonl", [
        {"id": "q1", "question": "Q1?", "answers": {"m1": "one", "m2": "two"}},
        {"id": "q2", "question": "Q2?", "answers": {"m1": "uno", "m2": "dos"}}])))
    for rater in ("rater one", "rater two", "ok"):
        s.add_rater(rater)
    yield s
    s.close()


def test_input_is_validated(tmp_path):
    with pytest.raises(RecordError, match=r"bad.jsonl:2 field 'answers'"):
        read_comparisons(_write(tmp_path / "bad.jsonl", [{"question": "ok", "answers": {"a": "x", "b": "y"}},
                                                         {"question": "Q", "answers": {"a": "only one"}}]))
    with pytest.raises(RecordError, match="'question'"):
        read_comparisons(_write(tmp_path / "q.jsonl", [{"question": " ", "answers": {"a": "x", "b": "y"}}]))
    with pytest.raises(RecordError, match="duplicate id"):
        row = {"id": 1, "question": "Q", "answers": {"a": "x", "b": "y"}}
        read_comparisons(_write(tmp_path / "d.jsonl", [row, row]))


def test_changed_input_for_the_same_db_is_refused(store, tmp_path):
    with pytest.raises(ValueError, match="stored with other text"):
        store.load([("q1", "Q1?", {"m1": "changed", "m2": "two"})])


def test_same_rater_never_gets_the_same_pair_twice(store):
    seen = []
    while True:
        task, done, total = store.next_task("rater one")
        if task is None:
            break
        assert done == len(seen) and total == 2
        # the sides are fixed for this rater: asking again shows the same screen
        assert store.next_task("rater one")[0] == task
        store.vote("rater one", task.id, "A", {"A": ["incomplete"]})
        seen.append(task.id)
        with pytest.raises(RepeatVote, match="already voted"):
            store.vote("rater one", task.id, "B")
    assert len(set(seen)) == 2 and sorted(seen) == sorted(v["task_id"] for v in store.votes())
    assert store.next_task("rater two")[1] == 0  # another rater starts afresh


@pytest.mark.parametrize("rater,task_id,choice,flags,problem", [
    ("", "TASK", "A", None, "rater name"),
    ("<script>", "TASK", "A", None, "rater name"),
    ("nobody", "TASK", "A", None, "unknown rater"),
    ("ok", 1, "A", None, "task_id"),
    ("ok", "1", "A", None, "no such task"),
    ("ok", "TASK", "C", None, "choice"),
    ("ok", "TASK", "A", {"A": ["rude"]}, "flags.A"),
    ("ok", "TASK", "A", {"C": []}, "flags"),
])
def test_bad_votes_are_refused(store, rater, task_id, choice, flags, problem):
    if task_id == "TASK":
        task_id = store.next_task("ok")[0].id
    with pytest.raises(VoteError, match=problem):
        store.vote(rater, task_id, choice, flags)
    assert store.votes() == []


def test_api_status_codes(store):
    token = store.add_rater("api rater")
    server = make_server(store)
    serve_in_thread(server)
    base = f"http://127.0.0.1:{server.server_address[1]}"

    def post(body: bytes, token: str = token) -> int:
        req = urllib.request.Request(f"{base}/api/vote", data=body, headers={"X-Aloe-Token": token})
        try:
            return urllib.request.urlopen(req, timeout=10).status
        except urllib.error.HTTPError as e:
            return e.code

    try:
        vote = json.dumps({"task_id": store.next_task("api rater")[0].id, "choice": "tie"}).encode()
        assert post(vote, token="nope") == 401
        assert post(b"{not json") == 400
        assert post(b"[1, 2]") == 400
        assert post(b"x" * 20_000) == 400
        assert post(vote) == 200
        assert post(vote) == 409
        assert [v["choice"] for v in store.votes()] == ["tie"]
    finally:
        server.shutdown()
        server.server_close()


def _vote(a, b, winner):
    return {"rater": "r", "model_a": a, "model_b": b, "winner": winner, "flags": {}}


def test_win_rates_count_ties_as_half():
    votes = [_vote("x", "y", "x"), _vote("y", "x", "x"), _vote("x", "y", None), _vote("y", "x", "y")]
    r = win_rates(votes)
    assert r["x"]["win_rate"] == pytest.approx(2.5 / 4) and r["y"]["win_rate"] == pytest.approx(1.5 / 4)
    assert (r["x"]["wins"], r["x"]["ties"], r["x"]["losses"]) == (2, 1, 1)
    lo, hi = r["x"]["ci95"]
    assert lo <= r["x"]["win_rate"] <= hi
    assert "bradley_terry" not in summarize_votes(votes)  # two models: win rates say it all


def test_bradley_terry_recovers_known_strengths():
    rng = np.random.default_rng(0)
    true = {"a": 0.6, "b": 0.3, "c": 0.1}
    votes = []
    names = list(true)
    for _ in range(3000):
        i, j = rng.choice(3, size=2, replace=False)
        x, y = names[i], names[j]
        votes.append(_vote(x, y, x if rng.random() < true[x] / (true[x] + true[y]) else y))
    bt = bradley_terry(votes)
    assert list(bt) == ["a", "b", "c"]
    for m, p in true.items():
        assert bt[m] == pytest.approx(p, abs=0.03)
    # A model that never lost still gets a finite strength.
    assert np.isfinite(list(bradley_terry([_vote("a", "b", "a")] * 5).values())).all()


def test_results_cli_prints_win_rates_and_ranking(tmp_path, capsys):
    from aloe.cli import main

    s = Store(tmp_path / "v.sqlite")
    s.load([("q1", "Q?", {"a": "1", "b": "2", "c": "3"})])
    s.add_rater("r")
    for _ in range(3):
        task, _, _ = s.next_task("r")
        winner_side = "A" if task.model_a == "a" or (task.model_b != "a" and task.model_a == "b") else "B"
        s.vote("r", task.id, winner_side)
    s.close()
    assert main(["human-eval", "results", "--db", str(tmp_path / "v.sqlite"), "--json", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    assert "| a | 2 | 2 | 0 | 0 | 100.0% |" in out
    assert "1. a" in out and "2. b" in out and "3. c" in out
    assert json.loads((tmp_path / "r.json").read_text())["win_rates"]["c"]["win_rate"] == 0.0


# The first layout (before keyed sides, opaque ids and rater tokens), as that version created it.
FIRST_LAYOUT = """
CREATE TABLE items (id TEXT PRIMARY KEY, question TEXT NOT NULL, answers TEXT NOT NULL);
CREATE TABLE tasks (id INTEGER PRIMARY KEY, item_id TEXT NOT NULL REFERENCES items(id),
    model_x TEXT NOT NULL, model_y TEXT NOT NULL, UNIQUE (item_id, model_x, model_y));
CREATE TABLE votes (id INTEGER PRIMARY KEY, rater TEXT NOT NULL, task_id INTEGER NOT NULL
    REFERENCES tasks(id), model_a TEXT NOT NULL, model_b TEXT NOT NULL, choice TEXT NOT NULL
    CHECK (choice IN ('A', 'B', 'tie')), winner TEXT, flags TEXT NOT NULL, created_at TEXT NOT NULL,
    UNIQUE (rater, task_id));
INSERT INTO items VALUES ('q1', 'Q?', '{"a": "1", "b": "2"}');
INSERT INTO tasks VALUES (1, 'q1', 'a', 'b');
INSERT INTO votes VALUES (1, 'Bob', 1, 'b', 'a', 'B', 'a', '{"a": [], "b": []}', '2024-01-01T00:00:00Z');
"""


def test_a_first_layout_database_takes_no_votes_but_its_results_still_read(tmp_path, capsys):
    import sqlite3

    from aloe.cli import main

    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as db:
        db.executescript(FIRST_LAYOUT)
    db.close()
    with pytest.raises(ValueError, match="older `aloe human-eval`.*new database"):
        Store(path)
    assert main(["human-eval", "add-rater", "Ann", "--db", str(path)]) == 2
    assert "results` still reads its votes" in capsys.readouterr().err
    assert main(["human-eval", "results", "--db", str(path)]) == 0
    out = capsys.readouterr().out
    assert "1 votes from 1 rater(s)" in out and "| a | 1 | 1 | 0 | 0 | 100.0% |" in out
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE notes (x)")
    db.close()
    with pytest.raises(ValueError, match="not a vote database"):
        Store(other)
