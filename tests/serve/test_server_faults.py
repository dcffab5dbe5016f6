"""The server under abandonment, overload and edge-of-window requests, and its streaming.

The model is the tiny random Llama: its text is noise, but generation, batching and HTTP are the
real ones. A spy on the row hook records which rows actually began generating and how each ended,
so "never ran" and "was stopped" are observed, not inferred.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import openai
import pytest
import torch

from aloe.infer.config import InferConfig
from aloe.infer.strategies import build_strategy
from aloe.models.backends import HFGenerator
from aloe.serve.app import AloeServer, ServeConfig

LONG_TOKENS = 600


def chat(content: str, **extra: Any) -> dict[str, Any]:
    return {"model": "tiny", "messages": [{"role": "user", "content": content}], **extra}


LONG = chat("Tell me everything you know.", max_tokens=LONG_TOKENS)
SHORT = chat("Hi", max_tokens=4)


class Spy(HFGenerator):
    """The real generator, noting the conversations it is given, the rows that began (were
    prefilled) and how each row ended."""

    def __init__(self, lm, name):
        super().__init__(lm, name)
        self.seen: list[list[dict[str, str]]] = []
        self.began: list[str] = []
        self.ended: list[tuple[str, str, int]] = []  # (last message, reason, tokens)

    def chat(self, conversations, params, on_done=None, hook=None):
        self.seen += conversations
        spy = self

        class Watch:
            def step(self, i, tokens):
                go = hook.step(i, tokens)
                if go and not tokens:
                    spy.began.append(conversations[i][-1]["content"])
                return go

            def end(self, i, text, tokens, reason):
                spy.ended.append((conversations[i][-1]["content"], reason, len(tokens)))
                hook.end(i, text, tokens, reason)

        return super().chat(conversations, params, on_done, Watch() if hook else None)  # strategies pass none


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    # These tests compare request latencies; on a busy 2-core machine torch's second thread only
    # adds contention, which makes the timings noisy.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@contextmanager
def serving(lm, strategy=None, **overrides: Any) -> Iterator[tuple[AloeServer, Spy]]:
    gen = Spy(lm, "tiny")
    cfg = ServeConfig(model_name="tiny", **{"batch_window_s": 0.01, "queue_timeout_s": 60, **overrides})
    srv = AloeServer(("127.0.0.1", 0), cfg, gen, strategy)
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    try:
        yield srv, gen
    finally:
        srv.shutdown()
        srv.server_close()
        t.join(timeout=5)


def send(srv, body: dict[str, Any], path: str = "/v1/chat/completions") -> http.client.HTTPConnection:
    """Sends a request without reading the answer (closing the connection abandons it)."""
    conn = http.client.HTTPConnection(*srv.server_address[:2], timeout=120)
    conn.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
    return conn


def post(srv, body: dict[str, Any], path: str = "/v1/chat/completions") -> tuple[int, dict[str, str], dict]:
    conn = send(srv, body, path)
    resp = conn.getresponse()
    data = json.loads(resp.read())
    conn.close()
    return resp.status, dict(resp.getheaders()), data


def get(srv, path: str) -> int:
    conn = http.client.HTTPConnection(*srv.server_address[:2], timeout=30)
    conn.request("GET", path)
    status = conn.getresponse().status
    conn.close()
    return status


def timed(srv, body: dict[str, Any]) -> float:
    t0 = time.perf_counter()
    status, _, data = post(srv, body)
    assert status == 200, data
    return time.perf_counter() - t0


def until(cond: Callable[[], bool], timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "timed out waiting for the server"
        time.sleep(0.01)


def client(srv) -> openai.OpenAI:
    host, port = srv.server_address[:2]
    return openai.OpenAI(base_url=f"http://{host}:{port}/v1", api_key="none", max_retries=0, timeout=120)


def test_a_client_that_disconnects_mid_generation_stops_its_generation(tiny_lm):
    prompt = LONG["messages"][-1]["content"]
    with serving(tiny_lm) as (srv, gen):
        t0 = time.perf_counter()
        status, _, full = post(srv, LONG)
        full_s = time.perf_counter() - t0
        assert status == 200 and full["choices"][0]["finish_reason"] == "length"  # no early end: all tokens run
        idle_s = min(timed(srv, SHORT) for _ in range(3))

        conn = send(srv, LONG)
        until(lambda: gen.began.count(prompt) == 2)
        time.sleep(0.2)  # well into its generation
        conn.close()
        next_s = timed(srv, SHORT)

        until(lambda: len([e for e in gen.ended if e[0] == prompt]) == 2)
        _, reason, n_tokens = [e for e in gen.ended if e[0] == prompt][-1]
        assert reason == "cancelled" and n_tokens < LONG_TOKENS / 2
        # The next request waits for neither the abandoned generation nor anything like it.
        assert next_s < idle_s + 0.2 * full_s, f"next {next_s:.2f}s, idle {idle_s:.2f}s, full {full_s:.2f}s"


def test_a_queue_time_out_cancels_the_queued_job(tiny_lm):
    tiny_lm.batch_size = 1  # one row at a time, so a job can wait inside a running call too
    with serving(tiny_lm, queue_timeout_s=0.5, batch_window_s=0.3) as (srv, gen):
        # Two long jobs within one batch window: one call, and the model's one row runs one of them.
        conns = {name: send(srv, chat(name, max_tokens=LONG_TOKENS)) for name in ("first", "second")}
        until(lambda: gen.began)
        running = gen.began[0]
        waiting = conns["second" if running == "first" else "first"].getresponse()
        # Arrives while the long job generates: waits in the server's queue.
        with ThreadPoolExecutor(1) as pool:
            queued = pool.submit(post, srv, chat("queued", max_tokens=4)).result()
        for status, headers, body in ((waiting.status, dict(waiting.getheaders()), json.loads(waiting.read())),
                                      queued):
            assert status == 503 and body["error"]["code"] == "timeout"
            assert int(headers["Retry-After"]) >= 1
        conns[running].close()
        assert post(srv, chat("after", max_tokens=4))[0] == 200
        assert gen.began == [running, "after"]  # the timed-out jobs never ran
        assert "queued" not in {m[-1]["content"] for m in gen.seen}


def test_a_full_server_answers_429_with_retry_after(tiny_lm):
    with serving(tiny_lm, max_concurrency=1) as (srv, gen):
        busy = send(srv, LONG)
        until(lambda: gen.began)
        status, headers, body = post(srv, SHORT)
        assert status == 429 and body["error"]["code"] == "overloaded"
        assert int(headers["Retry-After"]) >= 1
        busy.close()
        until(lambda: post(srv, SHORT)[0] == 200)


def test_max_tokens_is_checked_against_the_context_window(tiny_lm):
    window = tiny_lm.max_length
    with serving(tiny_lm) as (srv, gen):
        status, _, body = post(srv, chat("Hi", max_tokens=window + 100))
        assert status == 400 and body["error"]["param"] == "max_tokens"
        assert f"max_tokens={window + 100}" in body["error"]["message"] and str(window) in body["error"]["message"]

        n = gen.count_tokens(chat("Hi")["messages"])
        status, _, body = post(srv, chat("Hi", max_tokens=window - 2))
        assert status == 400 and body["error"]["code"] == "context_length_exceeded"
        assert f"take {n} tokens and max_tokens is {window - 2} ({n + window - 2} in all)" in body["error"]["message"]
        assert not gen.seen  # nothing reached the model


def test_an_over_long_prompt_is_refused_unless_truncation_is_asked_for(tiny_lm):
    tiny_lm.max_length = 256
    long_text = " ".join(f"fact{i} is true." for i in range(150))
    with serving(tiny_lm) as (srv, gen):
        n = gen.count_tokens(chat(long_text)["messages"])
        assert n > 256
        status, _, body = post(srv, chat(long_text))
        assert status == 400 and body["error"]["code"] == "context_length_exceeded"
        assert f"the messages take {n} tokens" in body["error"]["message"]

        system = {"role": "system", "content": "You are a careful clinical assistant."}
        messages = [system, {"role": "user", "content": "An old question"},
                    {"role": "assistant", "content": "An old answer"}, {"role": "user", "content": long_text}]
        out = client(srv).chat.completions.create(model="tiny", messages=messages, max_tokens=16,
                                                  extra_body={"truncate": True})
        sent = gen.seen[-1]
        assert sent[0] == system and sent[-1]["role"] == "user" and len(sent) == 2  # the old turns went first
        assert long_text.endswith(sent[-1]["content"].strip()) and len(sent[-1]["content"]) < len(long_text)
        assert out.usage.prompt_tokens == gen.count_tokens(sent) <= 256 - 16


def test_usage_and_finish_reason(tiny_lm):
    with serving(tiny_lm) as (srv, gen):
        c = client(srv)
        messages = [{"role": "user", "content": "Name a vitamin."}]
        out = c.chat.completions.create(model="tiny", messages=messages, max_tokens=12, temperature=1.0, seed=3)
        assert out.choices[0].finish_reason == "length"
        n = gen.count_tokens(messages)
        assert (out.usage.prompt_tokens, out.usage.completion_tokens, out.usage.total_tokens) == (n, 12, n + 12)

        text = out.choices[0].message.content
        stop = text[len(text) // 2:len(text) // 2 + 2]
        cut = c.chat.completions.create(model="tiny", messages=messages, max_tokens=12, temperature=1.0, seed=3,
                                        stop=stop)
        assert cut.choices[0].finish_reason == "stop"
        assert cut.choices[0].message.content == text[:text.find(stop)]
        assert cut.usage.completion_tokens < 12


def test_query_strings_do_not_break_routing(tiny_lm):
    with serving(tiny_lm) as (srv, _):
        assert get(srv, "/health?probe=1") == 200
        assert get(srv, "/v1/models?foo=bar") == 200
        assert post(srv, SHORT, "/v1/chat/completions?foo=bar")[0] == 200
        assert post(srv, SHORT, "/v1/chat/completions/?foo=bar&x=")[0] == 200
        assert post(srv, SHORT, "/v1/other?foo=bar")[0] == 404


def test_streaming_with_the_openai_client_matches_the_plain_answer(tiny_lm):
    strategy = build_strategy("zero-shot", InferConfig(direct_max_new_tokens=4, retry_temperatures=[1.0]))
    with serving(tiny_lm, strategy) as (srv, _):
        c = client(srv)
        messages = [{"role": "user", "content": "Tell me everything you know."}]
        sampled = {"temperature": 1.0, "seed": 3}  # seeded: the same text each time, and livelier than greedy
        text = c.chat.completions.create(model="tiny", messages=messages, max_tokens=24, **sampled).choices[0]
        text = text.message.content
        assert "\ufffd" in text  # a character split across tokens: streaming must not send half of it early
        stop = text[40:46]
        assert text.find(stop) == 40
        for params in ({"temperature": 0}, sampled, {**sampled, "stop": stop}):
            want = c.chat.completions.create(model="tiny", messages=messages, max_tokens=24, **params)
            chunks = list(c.chat.completions.create(model="tiny", messages=messages, max_tokens=24, stream=True,
                                                    stream_options={"include_usage": True}, **params))
            pieces = [ch.choices[0].delta.content for ch in chunks if ch.choices and ch.choices[0].delta.content]
            assert "".join(pieces) == want.choices[0].message.content
            assert len(pieces) > 2  # sent as it was generated, not in one piece
            assert chunks[0].choices[0].delta.role == "assistant"
            assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == want.choices[0].finish_reason
            assert chunks[-1].usage == want.usage
        assert want.choices[0].finish_reason == "stop" and want.choices[0].message.content == text[:40]

        mcq = "Which vitamin deficiency causes scurvy?\nA. Vitamin A\nB. Vitamin C"
        chunks = list(c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": mcq}],
                                                stream=True))
        assert chunks[-1].choices[0].finish_reason == "stop"
        assert chunks[-1].model_extra["aloe"]["strategy"] == "zero-shot"  # an MCQ answer streams as one piece


def test_a_stream_abandoned_midway_stops_its_generation(tiny_lm):
    prompt = LONG["messages"][-1]["content"]
    with serving(tiny_lm) as (srv, gen):
        conn = send(srv, {**LONG, "stream": True})
        resp = conn.getresponse()
        assert resp.status == 200 and resp.getheader("Content-Type") == "text/event-stream"
        assert resp.readline().startswith(b"data: ")  # the stream is flowing
        conn.close()
        until(lambda: gen.ended)
        assert gen.ended[0][:2] == (prompt, "cancelled") and gen.ended[0][2] < LONG_TOKENS / 2
