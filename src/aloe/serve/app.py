"""The OpenAI-compatible HTTP server: `/v1/chat/completions`, `/v1/models`, `/health`.

Built on the standard library's ThreadingHTTPServer: the work is one model behind a batcher, so an
async framework would add dependencies without adding throughput. Each connection gets a thread
that validates its request and then waits on the batcher; the batcher thread gathers whatever
requests arrive within a short window and runs them as one batch (one `strategy.predict` for the
MCQs, one `generator.chat` per set of sampling parameters for the rest), so concurrent clients
share the model's batched generation instead of queueing one by one.

No work is done for a request nobody waits for. While it waits, a request's thread watches its
client: a client that goes away, or a request that the model has not taken within
`queue_timeout_s` (503), cancels its job. A cancelled job that is still queued never runs; with the
in-process backend (a `TokenGenerator`) a generating row stops at the next decode step, and each
row's reply goes out the moment the row ends. (An MCQ's strategy run is shared by its batch and
runs to its end.) At most `max_concurrency` requests are in the
server, waiting or generating; past that a request gets 429 with Retry-After at once.

With the in-process backend, every request is measured against the model's context window: one
whose messages and `max_tokens` do not fit gets a 400 with the numbers, unless it sends
`"truncate": true`, which drops the oldest turns after the system prompt and then cuts the start of
the oldest turn left. Replies carry `usage` and `finish_reason` ("length" when max_tokens cut the
completion short); `stream: true` sends the completion as server-sent events in OpenAI's
chat.completion.chunk format, ending with `data: [DONE]`.

Routing: when the last message is a user turn that holds a multiple-choice question (see
`aloe.serve.mcq`), the configured strategy answers it, ignoring earlier turns and any system
prompt (the strategy builds its own prompt); the reply is "Answer: X" and an `aloe` object with
the votes, the few-shot ids and the passage ids, streamed as one chunk; its `usage` counts the
request's and the reply's tokens, not the strategy's own prompts and samples. Any other
conversation goes to the model as it is. Query strings play no part in routing.
"""

from __future__ import annotations

import hmac
import json
import logging
import math
import queue
import select
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from aloe.infer.strategies import Strategy, StrategyResult
from aloe.models.generator import GenParams, Generator, Messages, TokenGenerator
from aloe.records import MCQ
from aloe.serve.mcq import parse_mcq

log = logging.getLogger(__name__)

ROLES = {"system", "user", "assistant", "developer"}
POLL_S = 0.05  # how often a waiting request looks at its client: a cancellation lands within this and a step


@dataclass
class ServeConfig:
    model_name: str
    api_key: str | None = None
    max_concurrency: int = 16          # requests in the server at once (waiting or generating); more get 429
    queue_timeout_s: float = 120.0     # how long a request may wait for the model to take it; then 503
    max_body_bytes: int = 1_000_000
    max_messages: int = 256
    default_max_new_tokens: int = 256  # without max_tokens; lowered to what the context window leaves
    batch_window_s: float = 0.02
    max_batch: int = 64


class ApiError(Exception):
    def __init__(self, status: int, message: str, code: str, param: str | None = None,
                 kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.code, self.param, self.kind = status, message, code, param, kind

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


# -- request validation ---------------------------------------------------------------------------

@dataclass
class ChatRequest:
    messages: Messages
    params: GenParams
    max_tokens_field: str | None  # the field that set max_new_tokens; None: the server's default
    stream: bool = False
    include_usage: bool = False   # stream_options.include_usage: a last chunk with the usage
    truncate: bool = False


def _number(body: dict[str, Any], name: str, lo: float, hi: float, default: float, integer: bool = False) -> Any:
    v = body.get(name)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, int if integer else (int, float)):
        raise ApiError(400, f"'{name}' must be {'an integer' if integer else 'a number'}", "invalid_type", name)
    if not lo <= v <= hi:
        raise ApiError(400, f"'{name}' must be between {lo:g} and {hi:g}, got {v}", "invalid_value", name)
    return v


def _flag(body: dict[str, Any], name: str) -> bool:
    v = body.get(name)
    if v is not None and not isinstance(v, bool):
        raise ApiError(400, f"'{name}' must be true or false", "invalid_type", name)
    return bool(v)


def parse_request(body: Any, cfg: ServeConfig) -> ChatRequest:
    if not isinstance(body, dict):
        raise ApiError(400, "request body must be a JSON object", "invalid_body")
    if "model" not in body:
        raise ApiError(400, "missing required field 'model'", "missing_field", "model")
    if body["model"] != cfg.model_name:
        raise ApiError(404, f"model {body['model']!r} is not served here; this server serves "
                            f"{cfg.model_name!r}", "model_not_found", "model")
    msgs = body.get("messages")
    if msgs is None:
        raise ApiError(400, "missing required field 'messages'", "missing_field", "messages")
    if not isinstance(msgs, list) or not msgs:
        raise ApiError(400, "'messages' must be a non-empty array", "invalid_value", "messages")
    if len(msgs) > cfg.max_messages:
        raise ApiError(413, f"too many messages: {len(msgs)} > {cfg.max_messages}", "too_many_messages", "messages")
    clean: Messages = []
    for i, m in enumerate(msgs):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise ApiError(400, f"{where} must be an object", "invalid_type", where)
        if m.get("role") not in ROLES:
            raise ApiError(400, f"{where}.role must be one of {sorted(ROLES)}", "invalid_value", f"{where}.role")
        content = m.get("content")
        if isinstance(content, list):  # the content-parts form: text parts only
            if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
                       for p in content):
                raise ApiError(400, f"{where}.content: only text parts are supported", "invalid_value",
                               f"{where}.content")
            content = "".join(p["text"] for p in content)
        if not isinstance(content, str):
            raise ApiError(400, f"{where}.content must be a string", "invalid_type", f"{where}.content")
        role = "system" if m["role"] == "developer" else m["role"]
        clean.append({"role": role, "content": content})
    stream = _flag(body, "stream")
    options = body.get("stream_options")
    if options is not None and not (stream and isinstance(options, dict)):
        raise ApiError(400, "'stream_options' must be an object, and only with stream true", "invalid_value",
                       "stream_options")
    if _number(body, "n", 1, 1, 1, integer=True) != 1:
        raise ApiError(400, "only n=1 is supported", "unsupported", "n")
    name = next((k for k in ("max_completion_tokens", "max_tokens") if body.get(k) is not None), None)
    max_new = (cfg.default_max_new_tokens if name is None
               else _number(body, name, 1, 2**31 - 1, 0, integer=True))
    stop = body.get("stop") or []  # null and "" are OpenAI's ways of saying none
    if isinstance(stop, str):
        stop = [stop]
    if not (isinstance(stop, list) and len(stop) <= 4 and all(isinstance(s, str) and s for s in stop)):
        raise ApiError(400, "'stop' must be a string or an array of at most 4 non-empty strings", "invalid_value", "stop")
    params = GenParams(max_new_tokens=max_new, temperature=float(_number(body, "temperature", 0, 2, 0.0)),
                       top_p=float(_number(body, "top_p", 0, 1, 1.0)), stop=stop,
                       seed=_number(body, "seed", -(2**63), 2**63 - 1, 0, integer=True))
    if params.top_p == 0:
        raise ApiError(400, "'top_p' must be greater than 0", "invalid_value", "top_p")
    return ChatRequest(clean, params, name, stream, _flag(options or {}, "include_usage"), _flag(body, "truncate"))


def fit_context(req: ChatRequest, gen: TokenGenerator) -> int:
    """Makes the request fit the model's context window, or says why it cannot; its prompt tokens.

    Without max_tokens the completion gets what the window leaves, up to the default. Messages are
    cut only when the request asks for it with `truncate`.
    """
    window, m = gen.context_length, req.params.max_new_tokens
    if req.max_tokens_field is not None and m >= window:
        raise ApiError(400, f"{req.max_tokens_field}={m} must be below this model's context length of {window} "
                            "tokens (the prompt needs at least one)", "context_length_exceeded", req.max_tokens_field)
    m = min(m, window - 1)  # only the default can be this large, on a model with a small window
    n = gen.count_tokens(req.messages)
    if req.max_tokens_field is None and n < window:
        m = min(m, window - n)
    if n + m > window:
        if not req.truncate:
            raise ApiError(400, f"this model's context length is {window} tokens, but the messages take {n} tokens "
                                f"and max_tokens is {m} ({n + m} in all); shorten the messages, lower max_tokens, or "
                                "send \"truncate\": true to drop the oldest turns (the system prompt is kept)",
                           "context_length_exceeded", "messages")
        req.messages = truncate_messages(req.messages, window - m, gen)
        n = gen.count_tokens(req.messages)
    req.params.max_new_tokens = m
    return n


def truncate_messages(messages: Messages, budget: int, gen: TokenGenerator) -> Messages:
    """The messages within `budget` prompt tokens: the leading system messages and the last turn
    are kept; the oldest turns between go first, then the start of the oldest turn left."""
    head = 0
    while head < len(messages) and messages[head]["role"] == "system":
        head += 1
    system, rest = messages[:head], messages[head:]
    while len(rest) > 1 and gen.count_tokens(system + rest) > budget:
        rest = rest[1:]
    ids = gen.tokenizer(rest[0]["content"], add_special_tokens=False)["input_ids"] if rest else []
    cut, out = 0, system + rest
    while (over := gen.count_tokens(out) - budget) > 0:
        cut += over  # a token less in the content is about a token less in the prompt; recount to be sure
        if cut > len(ids):
            raise ApiError(400, f"the messages cannot be cut to the {budget} prompt tokens that max_tokens leaves: "
                                "the system prompt and the chat template alone take more", "context_length_exceeded",
                           "messages")
        out = system + [{**rest[0], "content": gen.tokenizer.decode(ids[cut:])}] + rest[1:]
    return out


def as_mcq(messages: Messages) -> MCQ | None:
    last = messages[-1]
    return parse_mcq(last["content"]) if last["role"] == "user" else None


# -- jobs and batching ----------------------------------------------------------------------------

QUEUED, RUNNING, DONE, CANCELLED = "queued", "running", "done", "cancelled"
_STARTED = object()  # the event that tells a request's thread the model has taken its job


@dataclass
class Outcome:
    text: str
    finish_reason: str = "stop"
    completion_tokens: int | None = None  # None: the backend does not say
    aloe: dict[str, Any] | None = None     # an MCQ answer's strategy details


@dataclass(eq=False)
class _Job:
    messages: Messages
    params: GenParams
    mcq: MCQ | None
    stream: bool = False
    # To the request's thread, in order: _STARTED, text deltas (when streaming), then an Outcome or an error
    events: queue.SimpleQueue[Any] = field(default_factory=queue.SimpleQueue)
    state: str = QUEUED
    streamed: int = 0  # characters already sent as deltas
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> bool:
        """Hands the job to the model, unless it was cancelled while queued."""
        with self._lock:
            if self.state != QUEUED:
                return False
            self.state = RUNNING
        self.events.put(_STARTED)
        return True

    def cancel(self, only_queued: bool = False) -> bool:
        """Cancels the job (with `only_queued`, only if the model has not taken it); whether it did."""
        with self._lock:
            if self.state == QUEUED or (self.state == RUNNING and not only_queued):
                self.state = CANCELLED
                return True
            return False

    def stream_text(self, text: str) -> None:
        if len(text) > self.streamed:
            self.events.put(text[self.streamed:])
            self.streamed = len(text)

    def finish(self, result: Outcome | Exception) -> None:
        with self._lock:
            if self.state == DONE:  # a row that ended before its call failed already has its outcome
                return
            self.state = DONE
        self.events.put(result)


def settled_text(text: str, stops: Sequence[str]) -> str:
    """The part of a partial completion that later tokens cannot change: without a trailing
    incomplete character or a tail that may be the start of a stop string (the final text ends
    before a stop string)."""
    text = text.rstrip("\ufffd")
    keep = len(text)
    for s in stops:
        k = next((k for k in range(min(len(s) - 1, len(text)), 0, -1) if text.endswith(s[:k])), 0)
        keep = min(keep, len(text) - k)
    return text[:keep]


class _Rows:
    """The row hook of one `generator.chat` call: starts, streams, cancels and settles its jobs."""

    def __init__(self, jobs: list[_Job], tokenizer: Any):
        self.jobs, self.tokenizer = jobs, tokenizer

    def step(self, index: int, tokens: Sequence[int]) -> bool:
        job = self.jobs[index]
        if not tokens:
            return job.start()
        if job.state == CANCELLED:
            return False
        if job.stream:
            job.stream_text(settled_text(self.tokenizer.decode(tokens, skip_special_tokens=True), job.params.stop))
        return True

    def end(self, index: int, text: str, tokens: Sequence[int], reason: str) -> None:
        self.jobs[index].finish(Outcome(text, reason, len(tokens)))


class Batcher:
    """One thread owns the model; jobs that arrive together run together."""

    def __init__(self, generator: Generator, strategy: Strategy | None, pool: Sequence[MCQ], cfg: ServeConfig):
        self.generator, self.strategy, self.pool, self.cfg = generator, strategy, list(pool), cfg
        self.jobs: queue.Queue[_Job] = queue.Queue()  # its live jobs are bounded by the server's admission
        self.batches = 0
        self.last_batch_s = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="aloe-batcher", daemon=True)
        self._thread.start()

    def submit(self, job: _Job) -> None:
        self.jobs.put(job)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                first = self.jobs.get(timeout=0.2)
            except queue.Empty:
                continue
            batch = [first]
            deadline = time.monotonic() + self.cfg.batch_window_s
            while len(batch) < self.cfg.max_batch and (left := deadline - time.monotonic()) > 0:
                try:
                    batch.append(self.jobs.get(timeout=left))
                except queue.Empty:
                    break
            if batch := [j for j in batch if j.state == QUEUED]:  # cancelled while queued: never run
                self.batches += 1
                t0 = time.monotonic()
                self._run(batch)
                self.last_batch_s = time.monotonic() - t0

    def _run(self, batch: list[_Job]) -> None:
        if mcqs := [j for j in batch if j.mcq is not None and j.start()]:
            def answer() -> None:
                results = self.strategy.predict(  # type: ignore[union-attr] # an MCQ job implies a strategy
                    self.generator, [j.mcq for j in mcqs], self.pool, progress=False)
                for j, r in zip(mcqs, results, strict=True):
                    j.finish(Outcome(mcq_reply(r), aloe={
                        "strategy": self.strategy.name, "letter": r.letter,  # type: ignore[union-attr]
                        "votes": r.votes, "shot_ids": r.shot_ids, "passage_ids": r.passage_ids}))
            _guard(mcqs, answer)
        by_params: dict[str, list[_Job]] = {}
        for j in batch:
            if j.mcq is None:
                by_params.setdefault(json.dumps(j.params.key(), sort_keys=True), []).append(j)
        for group in by_params.values():
            self._chat(group)

    def _chat(self, jobs: list[_Job]) -> None:
        gen = self.generator
        if isinstance(gen, TokenGenerator):
            # Each row starts as it reaches the model (skipped if cancelled by then) and settles its
            # job the step it ends.
            if jobs := [j for j in jobs if j.state == QUEUED]:
                _guard(jobs, lambda: gen.chat([j.messages for j in jobs], jobs[0].params,
                                              hook=_Rows(jobs, gen.tokenizer)))
        elif jobs := [j for j in jobs if j.start()]:
            def work() -> None:
                for j, text in zip(jobs, gen.chat([j.messages for j in jobs], jobs[0].params), strict=True):
                    j.finish(Outcome(text))
            _guard(jobs, work)


def _guard(jobs: list[_Job], work: Callable[[], object]) -> None:
    try:
        work()
    except Exception as e:  # the error goes to each request still waiting; the server keeps serving
        log.exception("generation failed")
        for j in jobs:
            j.finish(e)


def mcq_reply(r: StrategyResult) -> str:
    if r.letter is None:
        return f"No answer could be read from the model's {len(r.responses)} sample(s)."
    n = sum(len(s) for s in r.responses)
    if n == 1:
        return r.responses[0][0]
    votes = ", ".join(f"{k}={v}" for k, v in r.votes.items())
    return f"Answer: {r.letter}\n(votes {votes} over {len(r.responses)} samples)"


# -- HTTP -----------------------------------------------------------------------------------------

class AloeServer(ThreadingHTTPServer):
    daemon_threads = True
    # The stdlib's listen backlog of 5 overflows when a batch's clients all reconnect at once while
    # the model keeps the accepting thread waiting for the GIL; the kernel then drops or resets them.
    request_queue_size = 256

    def __init__(self, address: tuple[str, int], cfg: ServeConfig, generator: Generator,
                 strategy: Strategy | None = None, pool: Sequence[MCQ] = ()):
        self.cfg, self.strategy = cfg, strategy
        self.admission = threading.BoundedSemaphore(cfg.max_concurrency)
        self.batcher = Batcher(generator, strategy, pool, cfg)
        self.created = int(time.time())
        super().__init__(address, Handler)

    def retry_after(self) -> str:
        # A slot frees by the end of the batch now running at the latest; the last one's length
        # estimates that.
        return str(max(1, math.ceil(self.batcher.last_batch_s)))

    def server_close(self) -> None:
        super().server_close()
        self.batcher.close()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 60  # a client that stops sending mid-request frees its thread
    server: AloeServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's signature
        log.info("%s " + format, self.client_address[0], *args)

    @property
    def route(self) -> str:
        return urlsplit(self.path).path.rstrip("/") or "/"

    def _send(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body, ensure_ascii=False).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def _fail(self, e: ApiError, headers: dict[str, str] | None = None) -> None:
        self._send(e.status, e.body(), headers)

    def _authorised(self) -> bool:
        key = self.server.cfg.api_key
        if key is None:
            return True
        got = self.headers.get("Authorization", "")
        if got.startswith("Bearer ") and hmac.compare_digest(got[7:].strip().encode(), key.encode()):
            return True
        self._fail(ApiError(401, "invalid or missing API key (send 'Authorization: Bearer KEY')",
                            "invalid_api_key", kind="authentication_error"))
        return False

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked" or "Content-Length" not in self.headers:
            self.close_connection = True
            raise ApiError(411, "a Content-Length header is required", "length_required")
        try:
            length = int(self.headers["Content-Length"])
        except ValueError:
            self.close_connection = True
            raise ApiError(400, "Content-Length is not a number", "invalid_header") from None
        if length < 0 or length > self.server.cfg.max_body_bytes:
            # The body stays unread, so this connection cannot carry another request.
            self.close_connection = True
            raise ApiError(413, f"request body of {length} bytes exceeds the limit of "
                                f"{self.server.cfg.max_body_bytes}", "request_too_large")
        return self.rfile.read(length)

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's naming
        if self.route == "/health":
            return self._send(200, {"status": "ok"})
        if not self._authorised():
            return None
        if self.route == "/v1/models":
            return self._send(200, {"object": "list", "data": [
                {"id": self.server.cfg.model_name, "object": "model", "created": self.server.created,
                 "owned_by": "aloe"}]})
        return self._fail(ApiError(404, f"no route GET {self.path}", "not_found"))

    def do_POST(self) -> None:  # noqa: N802
        try:
            body = self._read_body()
        except ApiError as e:
            return self._fail(e)
        if self.route != "/v1/chat/completions":
            return self._fail(ApiError(404, f"no route POST {self.path}", "not_found"))
        if not self._authorised():
            return None
        try:
            req = parse_request(self._json(body), self.server.cfg)
        except ApiError as e:
            return self._fail(e)
        srv = self.server
        if not srv.admission.acquire(blocking=False):
            return self._fail(ApiError(429, f"server busy: {srv.cfg.max_concurrency} requests already waiting or "
                                            "generating; retry later", "overloaded", kind="server_error"),
                              {"Retry-After": srv.retry_after()})
        try:
            gen = srv.batcher.generator
            prompt_tokens = fit_context(req, gen) if isinstance(gen, TokenGenerator) else None
            self._complete(req, prompt_tokens)
        except ApiError as e:
            self._fail(e)
        finally:
            srv.admission.release()
        return None

    @staticmethod
    def _json(body: bytes) -> Any:
        try:
            return json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ApiError(400, f"request body is not valid JSON: {e}", "invalid_json") from None

    def _client_gone(self) -> bool:
        """Whether the client has closed its end: its socket reads as end of file."""
        try:
            readable = select.select([self.connection], [], [], 0)[0]
            return bool(readable) and not self.connection.recv(1, socket.MSG_PEEK)
        except (OSError, ValueError):  # reset, or closed under us
            return True

    def _complete(self, req: ChatRequest, prompt_tokens: int | None) -> None:
        srv = self.server
        mcq = as_mcq(req.messages) if srv.strategy is not None else None
        job = _Job(req.messages, req.params, mcq, req.stream)
        srv.batcher.submit(job)
        reply = _Reply(self, srv.cfg.model_name, prompt_tokens)
        deadline = time.monotonic() + srv.cfg.queue_timeout_s
        while True:
            if self._client_gone():
                job.cancel()
                log.info("%s went away; its request is cancelled", self.client_address[0])
                self.close_connection = True
                return
            try:
                event = job.events.get(timeout=POLL_S)
            except queue.Empty:
                if time.monotonic() > deadline and job.cancel(only_queued=True):
                    return self._fail(ApiError(503, f"timed out after {srv.cfg.queue_timeout_s:g} s waiting for the "
                                                    "model", "timeout", kind="server_error"),
                                      {"Retry-After": srv.retry_after()})
                continue
            try:
                if isinstance(event, Exception):
                    return reply.error(ApiError(500, f"generation failed: {type(event).__name__}: {event}",
                                                "generation_error", kind="server_error"))
                if isinstance(event, Outcome):
                    return reply.finish(event, req.include_usage)
                if req.stream:
                    reply.stream("" if event is _STARTED else event)
            except OSError:  # the client went away mid-stream
                job.cancel()
                self.close_connection = True
                return


class _Reply:
    """One completion's response: a JSON body, or a stream of chunks sent as the text comes."""

    def __init__(self, handler: Handler, model: str, prompt_tokens: int | None):
        self.h, self.model, self.prompt_tokens = handler, model, prompt_tokens
        self.id, self.created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        self.streaming = False
        self.sent = 0  # characters streamed

    def _head(self, kind: str) -> dict[str, Any]:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model,
                "system_fingerprint": None}

    def _event(self, data: str) -> None:
        # Chunked transfer encoding: the stream needs no length up front and the connection stays open.
        payload = f"data: {data}\n\n".encode()
        self.h.wfile.write(b"%X\r\n%s\r\n" % (len(payload), payload))

    def _chunk(self, delta: dict[str, str], finish_reason: str | None = None, **extra: Any) -> None:
        self._event(json.dumps({**self._head("chat.completion.chunk"), "choices": [
            {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}], **extra},
            ensure_ascii=False))

    def stream(self, text: str) -> None:
        """Sends a piece of the text; the first call opens the stream with the assistant's role."""
        if not self.streaming:
            self.h.send_response(200)
            self.h.send_header("Content-Type", "text/event-stream")
            self.h.send_header("Cache-Control", "no-cache")
            self.h.send_header("Transfer-Encoding", "chunked")
            self.h.end_headers()
            self.streaming = True
            self._chunk({"role": "assistant", "content": ""})
        if text:
            self._chunk({"content": text})
            self.sent += len(text)

    def _end_stream(self) -> None:
        self._event("[DONE]")
        self.h.wfile.write(b"0\r\n\r\n")

    def usage(self, out: Outcome) -> dict[str, int] | None:
        if self.prompt_tokens is None:
            return None
        gen = self.h.server.batcher.generator
        n = out.completion_tokens
        if n is None:  # an MCQ answer: the reply's own tokens
            n = len(gen.tokenizer(out.text, add_special_tokens=False)["input_ids"])  # type: ignore[attr-defined]
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": n, "total_tokens": self.prompt_tokens + n}

    def finish(self, out: Outcome, include_usage: bool) -> None:
        usage = self.usage(out)
        extra = {"aloe": out.aloe} if out.aloe is not None else {}
        if not self.streaming:
            return self.h._send(200, {**self._head("chat.completion"), "choices": [
                {"index": 0, "message": {"role": "assistant", "content": out.text}, "logprobs": None,
                 "finish_reason": out.finish_reason}], "usage": usage, **extra})
        self.stream(out.text[self.sent:])
        self._chunk({}, out.finish_reason, **extra)
        if include_usage and usage is not None:
            self._event(json.dumps({**self._head("chat.completion.chunk"), "choices": [], "usage": usage}))
        self._end_stream()
        return None

    def error(self, e: ApiError) -> None:
        if not self.streaming:
            return self.h._fail(e)
        self._event(json.dumps(e.body(), ensure_ascii=False))
        self._end_stream()
        return None
