"""The vote store's rules and validation, the API's refusals, and the win-rate / Bradley-Terry figures."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import numpy as np
import pytest

from aloe.humaneval.app import make_server, serve_in_thread
from aloe.humaneval.results import bradley_terry, summarize_votes, win_rates
from aloe.humaneval.store import Store, VoteError, read_comparisons
from aloe.io import RecordError

TOKEN = "unit-test-token-0123456789"


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture()
def store(tmp_path):
    s = Store(tmp_path / "v.sqlite")
    s.load(read_comparisons(_write(tmp_path / "in.jsonl", [
        {"id": "q1", "question": "Q1?", "answers": {"m1": "one", "m2": "two"}},
        {"id": "q2", "question": "Q2?", "answers": {"m1": "uno", "m2": "dos"}}])))
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
        with pytest.raises(VoteError, match="already voted"):
            store.vote("rater one", task.id, "B")
    assert sorted(seen) == [1, 2]
    assert store.next_task("rater two")[1] == 0  # another rater starts afresh


@pytest.mark.parametrize("rater,task_id,choice,flags,problem", [
    ("", 1, "A", None, "rater name"),
    ("<script>", 1, "A", None, "rater name"),
    ("ok", "1", "A", None, "task_id"),
    ("ok", 99, "A", None, "no such task"),
    ("ok", 1, "C", None, "choice"),
    ("ok", 1, "A", {"A": ["rude"]}, "flags.A"),
    ("ok", 1, "A", {"C": []}, "flags"),
])
def test_bad_votes_are_refused(store, rater, task_id, choice, flags, problem):
    with pytest.raises(VoteError, match=problem):
        store.vote(rater, task_id, choice, flags)
    assert store.votes() == []


def test_api_status_codes(store):
    server = make_server(store, TOKEN)
    serve_in_thread(server)
    base = f"http://127.0.0.1:{server.server_address[1]}"

    def post(body: bytes, token: str = TOKEN) -> int:
        req = urllib.request.Request(f"{base}/api/vote", data=body, headers={"X-Aloe-Token": token})
        try:
            return urllib.request.urlopen(req, timeout=10).status
        except urllib.error.HTTPError as e:
            return e.code

    try:
        vote = json.dumps({"rater": "r", "task_id": 1, "choice": "tie"}).encode()
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
    with pytest.raises(ValueError, match="16 characters"):
        make_server(store, "short")


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
