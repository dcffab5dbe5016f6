"""The human-eval app under attack: unblinding from the page, floods, stalled clients, malformed input,
and raters who change the case of their name (issue 18, items 3 and 4). Servers bind 127.0.0.1 only."""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from aloe.cli import main
from aloe.humaneval.app import make_server, serve_in_thread
from aloe.humaneval.results import summarize_votes
from aloe.humaneval.store import RepeatVote, Store, Task

DEADLINE = 2.0  # the server's whole-request timeout in these tests (5 s by default)
MODELS = ("m1", "m2")


def _store(path, n_items: int) -> Store:
    store = Store(path)
    store.load([(f"q{i}", f"Question {i}?", {m: f"{m} answers {i}" for m in MODELS}) for i in range(n_items)])
    return store


@pytest.fixture()
def served(tmp_path):
    """(store, port) of a server with a short request deadline over 5 questions of two models."""
    store = _store(tmp_path / "votes.sqlite", 5)
    server = make_server(store, timeout=DEADLINE, max_threads=24)
    serve_in_thread(server)
    yield store, server.server_address[1]
    server.shutdown()
    server.server_close()
    store.close()


def _raw(port: int, data: bytes) -> tuple[int, dict]:
    """Send raw bytes, read the whole answer (the server closes after one), return (status, JSON body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def _post(port: int, body: bytes, token: str | None, length: str | None = None) -> tuple[int, dict]:
    headers = "POST /api/vote HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    if token is not None:
        headers += f"X-Aloe-Token: {token}\r\n"
    if length != "":
        headers += f"Content-Length: {len(body) if length is None else length}\r\n"
    return _raw(port, headers.encode() + b"\r\n" + body)


def _vote(port: int, token: str | None, **fields) -> tuple[int, dict]:
    return _post(port, json.dumps(fields).encode(), token)


def _get(port: int, path: str, token: str) -> tuple[int, dict]:
    return _raw(port, f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Aloe-Token: {token}\r\n\r\n".encode())


def _walk(store: Store, rater: str) -> list[Task]:
    """Every task as the rater is shown it, in the rater's order (voting tie to move on)."""
    shown = []
    while (task := store.next_task(rater)[0]) is not None:
        shown.append(task)
        store.vote(rater, task.id, "tie")
    return shown


def _near_half(fraction: float, n: int) -> bool:
    return abs(fraction - 0.5) < 4 * 0.5 / n ** 0.5  # 4 standard errors of a fair coin: a false alarm ~1e-4


def test_page_content_does_not_predict_which_model_is_a(tmp_path):
    n = 300
    first, second = _store(tmp_path / "one.sqlite", n), _store(tmp_path / "two.sqlite", n)
    for s in (first, second):
        s.add_rater("Dr Ann")
    shown, again = _walk(first, "Dr Ann"), _walk(second, "Dr Ann")
    ids = [t.id for t in shown]
    # Opaque ids: random tokens, none numeric, none shared by two databases built from the same data.
    assert len(set(ids)) == n and all(len(i) >= 16 and not i.isdigit() for i in ids)
    assert not set(ids) & {t.id for t in again}
    m1_is_a = {t.item_id: t.model_a == "m1" for t in shown}
    assert _near_half(sum(m1_is_a.values()) / n, n)  # balanced across tasks
    # A per-database key: the same rater on the same data sees other sides in another database.
    agree = sum(m1_is_a[t.item_id] == (t.model_a == "m1") for t in again) / n
    assert _near_half(agree, n)
    # What the page shows (the id, the position in the rater's order, the id's sort order) guesses
    # the A-side model no better than a coin; the first guess is the attack that worked before.
    ranked = sorted(ids)
    guesses = {
        "unkeyed hash of (rater, id)": lambda i, t: int.from_bytes(hashlib.sha256(
            f"side\x1fDr Ann\x1f{t.id}".encode()).digest()[:8], "big") % 2 == 0,
        "position in the order": lambda i, t: i % 2 == 0,
        "first half of the order": lambda i, t: i < n // 2,
        "id sorts low": lambda i, t: ranked.index(t.id) < n // 2,
        "id's first character": lambda i, t: ord(t.id[0]) % 2 == 0,
    }
    for name, guess in guesses.items():
        hits = sum(guess(i, t) == (t.model_a == "m1") for i, t in enumerate(shown))
        assert _near_half(hits / n, n), f"{name} predicts the A side {hits}/{n} times"
    # The key persists: the same database reopened shows a rater the same screen.
    first.add_rater("Dr Ben")
    before = first.next_task("Dr Ben")[0]
    first.close()
    reopened = Store(tmp_path / "one.sqlite")
    assert reopened.next_task("Dr Ben")[0] == before
    reopened.close()
    second.close()


def _stall(port: int, token: str | None) -> socket.socket:
    """Half a request: cut in the headers (no token needed to do that), or a rater's valid headers
    promising 100 bytes of body that never all come."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    if token is None:
        s.sendall(b"POST /api/vote HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Aloe-")
    else:
        s.sendall(f"POST /api/vote HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Aloe-Token: {token}\r\n"
                  "Content-Length: 100\r\n\r\n{\"task_id\":".encode())
    return s


def _trickle(port: int, t0: float) -> float:
    """Seconds from t0 until the server cuts a client sending a header byte every 0.3 s, which a
    timeout on each read alone would never do."""
    with socket.create_connection(("127.0.0.1", port), timeout=0.3) as s:
        s.sendall(b"GET /api/next HTTP/1.1\r\nX-Aloe-Token: ")
        for _ in range(40):  # 12 s at most
            try:
                s.sendall(b"x")
                if s.recv(1024) == b"":
                    break
            except TimeoutError:
                continue
            except ConnectionError:
                break
        return time.monotonic() - t0


def _handler_threads() -> int:
    return sum("process_request_thread" in t.name for t in threading.enumerate())


def test_flood_and_stalled_clients_leave_the_server_serving(served):
    store, port = served
    raters = [f"rater {i}" for i in range(50)]
    tokens = {r: store.add_rater(r) for r in raters}
    # Each rater votes on their first task; ten send that vote twice at the same moment.
    votes = [(r, store.next_task(r)[0].id, ("A", "B", "tie")[i % 3]) for i, r in enumerate(raters)]
    sends = votes + votes[:10]
    peak, sampling = [0], threading.Event()

    def sample() -> None:
        while not sampling.wait(0.005):
            peak[0] = max(peak[0], _handler_threads())

    sampler = threading.Thread(target=sample)
    sampler.start()
    t0 = time.monotonic()
    stalled = [_stall(port, None if i % 2 else tokens["rater 49"]) for i in range(20)]
    trickler = ThreadPoolExecutor(1)
    trickled = trickler.submit(_trickle, port, t0)
    start = threading.Barrier(len(sends))

    def send(v: tuple[str, str, str]) -> int:
        start.wait(timeout=10)
        for _ in range(5):  # 503 says "busy, retry"; a vote the server took is never sent again
            status, _ = _vote(port, tokens[v[0]], task_id=v[1], choice=v[2])
            if status != 503:
                return status
            time.sleep(0.2)
        return 503

    try:
        with ThreadPoolExecutor(len(sends)) as pool:
            statuses = list(pool.map(send, sends))
        during = time.monotonic()
        status, page = _get(port, "/api/next", tokens["rater 0"])
        latency = time.monotonic() - during
        assert during - t0 < DEADLINE, "the flood outlasted the stalled clients: nothing was tested during it"
        assert status == 200 and page["done"] == 1

        closed_after = []
        for s in stalled:
            try:
                assert s.recv(1024) == b""  # the server closed it
            except ConnectionResetError:
                pass
            closed_after.append(time.monotonic() - t0)
            s.close()
    finally:
        sampling.set()
        sampler.join()
        trickler.shutdown()
    assert max(closed_after) < DEADLINE + 1.0 and trickled.result() < DEADLINE + 1.0
    after = time.monotonic()
    status, _ = _get(port, "/api/next", tokens["rater 1"])
    print(f"\n{statuses.count(200)} votes stored, {statuses.count(409)} repeats refused, {statuses.count(503)} "
          f"busy answers retried away; 20 stalled sockets closed {min(closed_after):.2f}-{max(closed_after):.2f} s "
          f"after they stalled, a trickling one {trickled.result():.2f} s (deadline {DEADLINE} s); a normal request "
          f"took {1000 * latency:.0f} ms during the attack and {1000 * (time.monotonic() - after):.0f} ms after; "
          f"at most {peak[0]} handler threads (cap 24)")
    assert status == 200
    assert 0 < peak[0] <= 24
    # Every vote stored exactly once, as sent; each doubled vote got one 200 and one 409.
    assert statuses.count(200) == 50 and statuses.count(409) == 10
    stored = {(v["rater"], v["task_id"]): v["choice"] for v in store.votes()}
    assert len(store.votes()) == 50 and stored == {(r, t): c for r, t, c in votes}


def test_malformed_votes_get_400_with_a_json_error(served):
    store, port = served
    token = store.add_rater("Dr Eve")
    status, page = _get(port, "/api/next", token)
    task_id = page["task"]["id"]
    assert status == 200 and not task_id.isdigit() and len(task_id) >= 16
    bad_fields = [
        {"task_id": 10 ** 23, "choice": "A"},  # used to overflow SQLite's integer and drop the connection
        {"task_id": 1, "choice": "A"},
        {"task_id": "1", "choice": "A"},  # numeric ids are gone
        {"task_id": "not-a-task-at-all", "choice": "A"},
        {"task_id": "spaces and ; quotes'", "choice": "A"},
        {"task_id": "x" * 200, "choice": "A"},
        {"task_id": 1.5, "choice": "A"},
        {"task_id": None, "choice": "A"},
        {"task_id": True, "choice": "A"},
        {"task_id": [task_id], "choice": "A"},
        {"choice": "A"},
        {"task_id": task_id},
        {"task_id": task_id, "choice": "C"},
        {"task_id": task_id, "choice": "A", "flags": {"A": "unsafe"}},
        {"task_id": task_id, "choice": "A", "rater": "somebody else"},
    ]
    answers = [_vote(port, token, **fields) for fields in bad_fields]
    bad_bodies = [(b"{not json", None), (b"[1, 2]", None), (b"\xff\xfe", None), (b"[" * 10_000, None),
                  (b'{"task_id": ' + b"9" * 5000 + b', "choice": "A"}', None), (b"x" * 20_000, None),
                  (b"{}", "abc"), (b"{}", "-2"), (b"{}", "1_0"), (b"{}", "0"), (b"{}", "")]
    answers += [_post(port, body, token, length) for body, length in bad_bodies]
    for (status, body), case in zip(answers, bad_fields + bad_bodies, strict=True):
        assert status == 400 and isinstance(body.get("error"), str), case
    assert "task_id" in answers[0][1]["error"] and "no such task" in answers[3][1]["error"]
    assert store.votes() == []
    assert _vote(port, token, task_id=task_id, choice="A")[0] == 200  # the server still serves


def test_bob_and_bob_are_one_rater_who_votes_once(served):
    store, port = served
    token = store.add_rater("Bob")
    for same in ("bob", "  BOB ", "Ｂｏｂ"):  # case, whitespace, full-width letters
        with pytest.raises(ValueError, match="already added"):
            store.add_rater(same)
    task = store.next_task("Bob")[0]
    assert store.next_task(" bob")[0] == task  # one rater, one screen
    assert _vote(port, token, task_id=task.id, choice="A")[0] == 200
    with pytest.raises(RepeatVote):
        store.vote("bob", task.id, "B")
    assert _vote(port, token, task_id=task.id, choice="B")[0] == 409
    new = store.add_rater("bob", reissue=True)  # a lost link: the old token stops working
    assert _vote(port, token, task_id=task.id, choice="B")[0] == 401
    status, body = _vote(port, new, task_id=task.id, choice="B")
    assert status == 409 and "already voted" in body["error"]
    votes = store.votes()
    assert [(v["rater"], v["choice"]) for v in votes] == [("bob", "A")]
    assert summarize_votes(votes)["raters"] == 1


def test_add_rater_prints_a_token_and_votes_need_one(tmp_path, capsys):
    db = tmp_path / "votes.sqlite"
    assert main(["human-eval", "add-rater", "Dr Cy", "--db", str(db)]) == 0
    token = capsys.readouterr().out.splitlines()[0]
    assert main(["human-eval", "add-rater", " dr  cy ", "--db", str(db)]) == 2
    assert "already added" in capsys.readouterr().err
    # Only a hash of the token is kept: a copy of the database does not let anyone vote.
    assert not any(token.encode() in p.read_bytes() for p in tmp_path.glob("votes.sqlite*"))
    store = _store(db, 2)
    server = make_server(store, timeout=DEADLINE)
    serve_in_thread(server)
    port = server.server_address[1]
    try:
        task_id = _get(port, "/api/next", token)[1]["task"]["id"]
        for wrong in (None, "", "x" * 32, token[:-1], token + "x"):
            status, body = _vote(port, wrong, task_id=task_id, choice="A")
            assert status == 401 and "token" in body["error"], wrong
        assert _raw(port, b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")[0] == 401
        assert store.votes() == []
        assert _vote(port, token, task_id=task_id, choice="A") == (200, {"ok": True, "task_id": task_id})
        assert main(["human-eval", "add-rater", "Dr Di", "--db", str(db)]) == 0  # while serving
        late = capsys.readouterr().out.splitlines()[0]
        assert _vote(port, late, task_id=task_id, choice="B")[0] == 200
        assert [v["rater"] for v in store.votes()] == ["dr cy", "dr di"]
    finally:
        server.shutdown()
        server.server_close()
        store.close()
