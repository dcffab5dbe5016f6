"""The server against the official openai client, and under a burst of bad and concurrent requests.

The model is the tiny random Llama: its text is noise, but every path (validation, routing,
batching, strategy, HTTP) is the real one.
"""

from __future__ import annotations

import http.client
import json
import threading
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

from aloe.infer.config import InferConfig
from aloe.infer.strategies import build_strategy
from aloe.models.backends import HFGenerator
from aloe.serve.app import AloeServer, ServeConfig
from aloe.serve.mcq import parse_mcq

KEY = "test-key"
MCQ_TEXT = "Which vitamin deficiency causes scurvy?\nA. Vitamin A\nB. Vitamin C\nC. Vitamin D\nD. Vitamin K"


class CountingGenerator(HFGenerator):
    """The real in-process generator, counting calls so tests can see requests batched together."""

    def __init__(self, lm, name):
        super().__init__(lm, name)
        self.calls: list[int] = []

    def chat(self, conversations, params, on_done=None, hook=None):
        self.calls.append(len(conversations))
        return super().chat(conversations, params, on_done, hook)


@pytest.fixture()
def server(tiny_lm):
    tiny_lm.batch_size = 16
    gen = CountingGenerator(tiny_lm, "tiny")
    strategy = build_strategy("zero-shot", InferConfig(direct_max_new_tokens=4, retry_temperatures=[1.0]))
    cfg = ServeConfig(model_name="tiny", api_key=KEY, max_concurrency=16, max_body_bytes=20_000,
                      default_max_new_tokens=8, batch_window_s=0.05, queue_timeout_s=300)
    srv = AloeServer(("127.0.0.1", 0), cfg, gen, strategy)
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    t.join(timeout=5)


def _client(srv, key=KEY) -> openai.OpenAI:
    host, port = srv.server_address[:2]
    return openai.OpenAI(base_url=f"http://{host}:{port}/v1", api_key=key, max_retries=0, timeout=300)


def _raw(srv, method, path, body: bytes | None = None, headers=None) -> tuple[int, dict]:
    host, port = srv.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=300)
    h = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json", **(headers or {})}
    conn.request(method, path, body=body, headers=h)
    resp = conn.getresponse()
    data = json.loads(resp.read() or b"{}")
    conn.close()
    return resp.status, data


def test_openai_client_lists_models_and_chats(server):
    client = _client(server)
    assert [m.id for m in client.models.list().data] == ["tiny"]
    out = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hello there"}],
                                         max_tokens=5, temperature=0)
    assert out.choices[0].message.role == "assistant"
    assert isinstance(out.choices[0].message.content, str)
    assert out.model_extra.get("aloe") is None  # not an MCQ: passed through


def test_mcq_turns_go_through_the_strategy(server):
    out = _client(server).chat.completions.create(model="tiny", messages=[{"role": "user", "content": MCQ_TEXT}])
    info = out.model_extra["aloe"]
    assert info["strategy"] == "zero-shot"
    assert info["letter"] in (None, "A", "B", "C", "D")
    assert sum(info["votes"].values()) <= 1


def test_wrong_key_and_wrong_model_are_refused(server):
    with pytest.raises(openai.AuthenticationError):
        _client(server, key="nope").models.list()
    with pytest.raises(openai.NotFoundError, match="not served here"):
        _client(server).chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "hi"}])


BAD = [
    (b"{not json", 400, "invalid_json"),
    (b'["a list"]', 400, "invalid_body"),
    (json.dumps({"messages": [{"role": "user", "content": "x"}]}).encode(), 400, "missing_field"),
    (json.dumps({"model": "tiny"}).encode(), 400, "missing_field"),
    (json.dumps({"model": "tiny", "messages": []}).encode(), 400, "invalid_value"),
    (json.dumps({"model": "tiny", "messages": [{"role": "wizard", "content": "x"}]}).encode(), 400, "invalid_value"),
    (json.dumps({"model": "tiny", "messages": [{"role": "user", "content": 5}]}).encode(), 400, "invalid_type"),
    (json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "temperature": 9}).encode(),
     400, "invalid_value"),
    (json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "max_tokens": "a"}).encode(),
     400, "invalid_type"),
    (json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}).encode(),
     400, "invalid_type"),
    (json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "x" * 30_000}]}).encode(),
     413, "request_too_large"),
    (b"\xff\xfe garbage", 400, "invalid_json"),
]


@pytest.mark.parametrize(("body", "status", "code"), BAD)
def test_bad_requests_get_a_clear_4xx(server, body, status, code):
    got, data = _raw(server, "POST", "/v1/chat/completions", body)
    assert got == status
    assert data["error"]["code"] == code and data["error"]["message"]


def test_a_burst_of_bad_and_valid_requests_drops_no_valid_one(server):
    client = _client(server)

    def valid(i: int):
        if i % 2:
            r = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": MCQ_TEXT}])
            return "aloe" in r.model_extra
        r = client.chat.completions.create(model="tiny", max_tokens=4,
                                           messages=[{"role": "user", "content": f"Say {i}"}])
        return isinstance(r.choices[0].message.content, str)

    def bad(i: int):
        body, status, _ = BAD[i % len(BAD)]
        return _raw(server, "POST", "/v1/chat/completions", body)[0] == status

    with ThreadPoolExecutor(max_workers=24) as ex:
        valid_f = [ex.submit(valid, i) for i in range(12)]
        bad_f = [ex.submit(bad, i) for i in range(36)]
        assert all(f.result() for f in valid_f)
        assert all(f.result() for f in bad_f)
    gen = server.batcher.generator
    assert sum(gen.calls) >= 12 and max(gen.calls) > 1  # concurrent requests shared a batch
    assert _client(server).models.list().data  # still serving


def test_unknown_routes_and_health(server):
    assert _raw(server, "GET", "/health")[0] == 200
    assert _raw(server, "GET", "/v1/nothing")[0] == 404
    assert _raw(server, "POST", "/v1/completions", b"{}")[0] == 404


def test_parse_mcq_reads_aloe_and_common_layouts():
    q = parse_mcq("Context: Some abstract.\nQuestion: Does X help?\nA. yes\nB. no\nC. maybe")
    assert (q.context, q.question, q.options) == ("Some abstract.", "Does X help?", {"A": "yes", "B": "no", "C": "maybe"})
    assert parse_mcq("Pick one:\n(A) red\n(B) blue").options == {"A": "red", "B": "blue"}
    assert parse_mcq("Tell me about vitamin C.") is None
    assert parse_mcq("Q?\nB. first\nC. second") is None  # must start at A
    assert parse_mcq("A. only options\nB. no stem") is None
