"""The OpenAI-compatible HTTP server: `/v1/chat/completions`, `/v1/models`, `/health`.

Built on the standard library's ThreadingHTTPServer: the work is one model behind a batcher, so an
async framework would add dependencies without adding throughput. Each connection gets a thread
that validates its request and then waits on the batcher; the batcher thread gathers whatever
requests arrive within a short window and runs them as one batch (one `strategy.predict` for the
MCQs, one `generator.chat` per set of sampling parameters for the rest), so concurrent clients
share the model's batched generation instead of queueing one by one.

Routing: when the last message is a user turn that holds a multiple-choice question (see
`aloe.serve.mcq`), the configured strategy answers it, ignoring earlier turns and any system
prompt (the strategy builds its own prompt); the reply is "Answer: X" and an `aloe` object with
the votes, the few-shot ids and the passage ids. Any other conversation goes to the model as it is.
"""

from __future__ import annotations

import hmac
import json
import logging
import queue
import threading
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aloe.infer.strategies import Strategy, StrategyResult
from aloe.models.generator import GenParams, Generator, Messages
from aloe.records import MCQ
from aloe.serve.mcq import parse_mcq

log = logging.getLogger(__name__)

ROLES = {"system", "user", "assistant", "developer"}


@dataclass
class ServeConfig:
    model_name: str
    api_key: str | None = None
    max_concurrency: int = 16          # requests admitted at once (validated, waiting or running)
    queue_timeout_s: float = 120.0     # how long an admitted request may wait for the model
    admit_timeout_s: float = 30.0      # how long a request waits for admission before a 503
    max_body_bytes: int = 1_000_000
    max_messages: int = 256
    max_new_tokens_cap: int = 2048
    default_max_new_tokens: int = 256
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

def _number(body: dict[str, Any], name: str, lo: float, hi: float, default: float, integer: bool = False) -> Any:
    v = body.get(name)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, int if integer else (int, float)):
        raise ApiError(400, f"'{name}' must be {'an integer' if integer else 'a number'}", "invalid_type", name)
    if not lo <= v <= hi:
        raise ApiError(400, f"'{name}' must be between {lo:g} and {hi:g}, got {v}", "invalid_value", name)
    return v


def parse_request(body: Any, cfg: ServeConfig) -> tuple[Messages, GenParams]:
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
    if body.get("stream"):
        raise ApiError(400, "streaming is not supported; set stream to false", "unsupported", "stream")
    if _number(body, "n", 1, 1, 1, integer=True) != 1:
        raise ApiError(400, "only n=1 is supported", "unsupported", "n")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    name = "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
    max_new = _number({name: max_tokens}, name, 1, cfg.max_new_tokens_cap, cfg.default_max_new_tokens, integer=True)
    stop = body.get("stop")
    if stop is None:
        stop = []
    elif isinstance(stop, str):
        stop = [stop]
    elif not (isinstance(stop, list) and len(stop) <= 4 and all(isinstance(s, str) and s for s in stop)):
        raise ApiError(400, "'stop' must be a string or an array of at most 4 non-empty strings", "invalid_value", "stop")
    params = GenParams(max_new_tokens=max_new, temperature=float(_number(body, "temperature", 0, 2, 0.0)),
                       top_p=float(_number(body, "top_p", 0, 1, 1.0)), stop=stop,
                       seed=_number(body, "seed", -(2**63), 2**63 - 1, 0, integer=True))
    if params.top_p == 0:
        raise ApiError(400, "'top_p' must be greater than 0", "invalid_value", "top_p")
    return clean, params


def as_mcq(messages: Messages) -> MCQ | None:
    last = messages[-1]
    return parse_mcq(last["content"]) if last["role"] == "user" else None


# -- batching -------------------------------------------------------------------------------------

@dataclass
class _Job:
    messages: Messages
    params: GenParams
    mcq: MCQ | None
    future: Future = field(default_factory=Future)


class Batcher:
    """One thread owns the model; jobs that arrive together run together."""

    def __init__(self, generator: Generator, strategy: Strategy | None, pool: Sequence[MCQ], cfg: ServeConfig):
        self.generator, self.strategy, self.pool, self.cfg = generator, strategy, list(pool), cfg
        self.jobs: queue.Queue[_Job] = queue.Queue()
        self.batches = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="aloe-batcher", daemon=True)
        self._thread.start()

    def submit(self, job: _Job) -> Future:
        self.jobs.put(job)
        return job.future

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
            self.batches += 1
            self._run(batch)

    def _run(self, batch: list[_Job]) -> None:
        mcqs = [j for j in batch if j.mcq is not None and self.strategy is not None]
        chats = [j for j in batch if j not in mcqs]
        if mcqs:
            self._settle(mcqs, lambda: self.strategy.predict(  # type: ignore[union-attr]
                self.generator, [j.mcq for j in mcqs], self.pool, progress=False))
        by_params: dict[str, list[_Job]] = {}
        for j in chats:
            by_params.setdefault(json.dumps(j.params.key(), sort_keys=True), []).append(j)
        for group in by_params.values():
            self._settle(group, lambda g=group: self.generator.chat([j.messages for j in g], g[0].params))

    @staticmethod
    def _settle(jobs: list[_Job], work: Any) -> None:
        try:
            outs = work()
        except Exception as e:  # the error goes to each waiting request; the server keeps serving
            log.exception("generation failed")
            for j in jobs:
                j.future.set_exception(e)
            return
        for j, o in zip(jobs, outs, strict=True):
            j.future.set_result(o)


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

    def __init__(self, address: tuple[str, int], cfg: ServeConfig, generator: Generator,
                 strategy: Strategy | None = None, pool: Sequence[MCQ] = ()):
        self.cfg, self.strategy = cfg, strategy
        self.admission = threading.BoundedSemaphore(cfg.max_concurrency)
        self.batcher = Batcher(generator, strategy, pool, cfg)
        self.created = int(time.time())
        super().__init__(address, Handler)

    def server_close(self) -> None:
        super().server_close()
        self.batcher.close()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 60  # a client that stops sending mid-request frees its thread
    server: AloeServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's signature
        log.info("%s " + format, self.client_address[0], *args)

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
        if self.path == "/health":
            return self._send(200, {"status": "ok"})
        if not self._authorised():
            return None
        if self.path.rstrip("/") == "/v1/models":
            return self._send(200, {"object": "list", "data": [
                {"id": self.server.cfg.model_name, "object": "model", "created": self.server.created,
                 "owned_by": "aloe"}]})
        return self._fail(ApiError(404, f"no route GET {self.path}", "not_found"))

    def do_POST(self) -> None:  # noqa: N802
        try:
            body = self._read_body()
        except ApiError as e:
            return self._fail(e)
        if self.path.rstrip("/") != "/v1/chat/completions":
            return self._fail(ApiError(404, f"no route POST {self.path}", "not_found"))
        if not self._authorised():
            return None
        try:
            messages, params = parse_request(self._json(body), self.server.cfg)
        except ApiError as e:
            return self._fail(e)
        if not self.server.admission.acquire(timeout=self.server.cfg.admit_timeout_s):
            return self._fail(ApiError(503, "server busy: too many concurrent requests", "overloaded",
                                       kind="server_error"), {"Retry-After": "1"})
        try:
            self._complete(messages, params)
        finally:
            self.server.admission.release()
        return None

    @staticmethod
    def _json(body: bytes) -> Any:
        try:
            return json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ApiError(400, f"request body is not valid JSON: {e}", "invalid_json") from None

    def _complete(self, messages: Messages, params: GenParams) -> None:
        mcq = as_mcq(messages) if self.server.strategy is not None else None
        future = self.server.batcher.submit(_Job(messages, params, mcq))
        try:
            out = future.result(timeout=self.server.cfg.queue_timeout_s)
        except TimeoutError:
            return self._fail(ApiError(503, "timed out waiting for the model", "timeout", kind="server_error"))
        except Exception as e:  # reported, never raised into the server loop
            return self._fail(ApiError(500, f"generation failed: {type(e).__name__}: {e}", "generation_error",
                                       kind="server_error"))
        extra: dict[str, Any] = {}
        if isinstance(out, StrategyResult):
            text = mcq_reply(out)
            extra = {"aloe": {"strategy": self.server.strategy.name, "letter": out.letter,  # type: ignore[union-attr]
                              "votes": out.votes, "shot_ids": out.shot_ids, "passage_ids": out.passage_ids}}
        else:
            text = out
        self._send(200, {
            "id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
            "model": self.server.cfg.model_name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop",
                         "logprobs": None}],
            **extra,
        })
        return None
