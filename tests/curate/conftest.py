"""A scripted OpenAI-compatible teacher on 127.0.0.1 for the CoT tests.

It answers each MCQ with the letter its script names for that try (the try is read from the
request's seed), injects 429 / 500 / slow responses on request, and logs every request it receives
server-side, so tests can count what the client really asked for.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

_QUESTION = re.compile(r"Question: (.*?)\nOptions:", re.S)


@dataclass
class Teacher:
    # question text -> the letter (or None: no answer at all) returned on try 0, 1, 2, ...
    script: dict[str, list[str | None]]
    # question text -> faults to serve first, in order: 429, 500 or "slow"
    faults: dict[str, list[int | str]] = field(default_factory=dict)
    slow_seconds: float = 1.5
    on_request: Callable[[int], None] | None = None
    log: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def reply(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        prompt = body["messages"][-1]["content"]
        m = _QUESTION.search(prompt)
        q = " ".join(m.group(1).split()) if m else ""  # the cleaning step may have normalised spaces
        with self.lock:
            n = len(self.log) + 1
            fault = self.faults.get(q, []).pop(0) if self.faults.get(q) else None
            self.log.append({"n": n, "question": q, "temperature": body.get("temperature"), "seed": body.get("seed"),
                             "fault": fault})
        if self.on_request:
            self.on_request(n)
        if fault == "slow":
            time.sleep(self.slow_seconds)
        elif fault in (429, 500):
            return int(fault), {"error": {"message": "injected"}}
        answers = self.script.get(q, [None])
        letter = answers[min(int(body.get("seed", 0)), len(answers) - 1)]
        text = (f"Rephrased: the question asks about {q[:40]}.\nOption analysis: each option was weighed.\n"
                f"Summary: the reasoning points to one option.\n" + (f"Answer: {letter}" if letter else "I am not sure."))
        return 200, {"id": f"cmpl-{n}", "object": "chat.completion", "model": body.get("model"),
                     "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                  "finish_reason": "stop"}]}

    def __post_init__(self) -> None:
        self.script = {" ".join(q.split()): v for q, v in self.script.items()}
        self.faults = {" ".join(q.split()): v for q, v in self.faults.items()}

    def requests_for(self, question: str) -> list[dict[str, Any]]:
        return [r for r in self.log if r["question"] == " ".join(question.split())]


def _serve(teacher: Teacher, max_seconds: float = 120.0) -> Iterator[Teacher]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            length = int(self.headers.get("Content-Length", 0))
            status, payload = teacher.reply(json.loads(self.rfile.read(length)))
            data = json.dumps(payload).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
                pass

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    teacher.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    # shut down by itself even if a test hangs
    watchdog = threading.Timer(max_seconds, server.shutdown)
    watchdog.daemon = True
    watchdog.start()
    try:
        yield teacher
    finally:
        watchdog.cancel()
        server.shutdown()
        server.server_close()


@pytest.fixture()
def serve_teacher() -> Iterator[Callable[..., Teacher]]:
    stack: list[Iterator[Teacher]] = []

    def start(**kw: Any) -> Teacher:
        gen = _serve(Teacher(**kw))
        stack.append(gen)
        return next(gen)

    yield start
    for gen in stack:
        next(gen, None)
