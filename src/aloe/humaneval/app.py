"""The human-evaluation web app: the standard library's HTTP server, one page, two API calls.

Every request needs a rater's token (from `aloe human-eval add-rater`): `?token=` on the page, the
X-Aloe-Token header on the API. The token names the rater; without a valid one the answer is 401
and nothing else. Bodies are capped and every field validated: malformed input gets 400 with a
JSON error, a repeat vote 409.

Hostile clients cannot hold the server: a client has `timeout` seconds to send its whole request
(a stalled or trickling one is dropped), at most `max_threads` requests are handled at once, and
further connections wait in a 128-deep listen backlog, or get 503 when no thread frees in time.
"""

from __future__ import annotations

import io
import json
import logging
import re
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from aloe.humaneval.page import PAGE
from aloe.humaneval.store import RepeatVote, Store, VoteError

log = logging.getLogger(__name__)
MAX_BODY = 16_384
VOTE_FIELDS = frozenset({"task_id", "choice", "flags"})
REQUEST_TIMEOUT = 5.0
MAX_THREADS = 32
LINGER = 0.5
CONTENT_LENGTH = re.compile(r"[0-9]{1,9}")  # int() would also take " 12", "1_2" and other digits
TOKEN_IN_URL = re.compile(r"token=[^&\s]*")

_BUSY_BODY = json.dumps({"error": "the server is busy; try again in a moment"}).encode()
BUSY = (b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
        b"Connection: close\r\nContent-Length: " + str(len(_BUSY_BODY)).encode() + b"\r\n\r\n" + _BUSY_BODY)


class _DeadlineReader(io.RawIOBase):
    """A socket reader that fails once a deadline passes, however the bytes trickle in.

    A plain socket timeout only bounds each wait, so a client sending a byte every few seconds
    could hold a thread for ever; this bounds the whole request.
    """

    def __init__(self, sock: socket.socket, seconds: float):
        self._sock, self._deadline = sock, time.monotonic() + seconds

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the request did not arrive in time")
        self._sock.settimeout(left)
        return self._sock.recv_into(buffer)


class HumanEvalServer(ThreadingHTTPServer):
    request_queue_size = 128  # the listen backlog: bursts queue in the kernel instead of being reset

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], timeout: float,
                 max_threads: int):
        self.request_timeout = timeout
        self._slots = threading.BoundedSemaphore(max_threads)
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        # Waiting here leaves further connections in the backlog; a slot frees within `timeout`
        # unless every thread is stuck in a slow store call, and then a quick 503 is kinder.
        if not self._slots.acquire(timeout=self.request_timeout):
            try:
                request.settimeout(1.0)
                request.sendall(BUSY)
            except OSError:
                log.info("human-eval: a client left before its 503 was sent")
            super().shutdown_request(request)  # no lingering: this is the accept loop
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()  # no thread started to release it
            raise

    def shutdown_request(self, request: Any) -> None:
        # Closing a socket with unread input makes the kernel send a reset, which can destroy the
        # answer before the client reads it (a 400 for an oversize body, a 401 before the body):
        # stop sending, then drain what the client still sends for at most LINGER seconds.
        deadline = time.monotonic() + LINGER
        try:
            request.shutdown(socket.SHUT_WR)
            while (left := deadline - time.monotonic()) > 0:
                request.settimeout(left)
                if not request.recv(65_536):
                    break
        except OSError:
            pass  # timed out or reset: either way the socket is done with
        self.close_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client resetting mid-request is routine under load: a log line, not a console traceback.
        log.info("human-eval: the connection from %s failed", client_address[0], exc_info=True)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


def make_server(store: Store, host: str = "127.0.0.1", port: int = 0, timeout: float = REQUEST_TIMEOUT,
                max_threads: int = MAX_THREADS) -> HumanEvalServer:
    class Handler(BaseHTTPRequestHandler):
        server_version = "aloe-human-eval"

        def setup(self) -> None:
            super().setup()
            self.rfile.close()  # replaced: this one bounds the whole request, not each wait
            self.rfile = io.BufferedReader(_DeadlineReader(self.connection, timeout))

        def _send(self, status: int, body: bytes, ctype: str) -> None:
            self.connection.settimeout(timeout)  # the reader left the request's remaining time here
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Referrer-Policy", "no-referrer")  # the URL holds the rater's token
            self.send_header("Content-Security-Policy", "default-src 'self'; script-src 'unsafe-inline'; "
                             "style-src 'unsafe-inline'")
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, data: Any) -> None:
            self._send(status, json.dumps(data).encode(), "application/json")

        def _rater(self, query: dict[str, list[str]]) -> str | None:
            """The rater the request's token names; None after answering 401."""
            given = self.headers.get("X-Aloe-Token") or (query.get("token") or [""])[0]
            rater = store.rater_for_token(given) if given else None
            if rater is None:
                self._json(401, {"error": "access token missing or wrong"})
            return rater

        def _guarded(self, route: Callable[[], None]) -> None:
            """Answer 500 for a fault of ours instead of dropping the connection."""
            try:
                route()
            except (TimeoutError, ConnectionError):
                raise  # the client stalled or left: nothing to answer; the server closes the socket
            except Exception:
                log.exception("human-eval: %s %s failed", self.command, urlsplit(self.path).path)
                self._json(500, {"error": "internal error; the server's log has the details"})

        def do_GET(self) -> None:
            self._guarded(self._get)

        def do_POST(self) -> None:
            self._guarded(self._post)

        def _get(self) -> None:
            url = urlsplit(self.path)
            rater = self._rater(parse_qs(url.query))
            if rater is None:
                return
            if url.path == "/":
                self._send(200, PAGE.encode(), "text/html; charset=utf-8")
            elif url.path == "/api/next":
                task, done, total = store.next_task(rater)
                payload = None if task is None else {"id": task.id, "question": task.question,
                                                     "answer_a": task.answer_a, "answer_b": task.answer_b}
                self._json(200, {"rater": rater, "task": payload, "done": done, "total": total})
            else:
                self._json(404, {"error": "not found"})

        def _post(self) -> None:
            url = urlsplit(self.path)
            rater = self._rater(parse_qs(url.query))
            if rater is None:
                return
            if url.path != "/api/vote":
                self._json(404, {"error": "not found"})
                return
            length = self.headers.get("Content-Length", "")
            if not CONTENT_LENGTH.fullmatch(length) or not 0 < int(length) <= MAX_BODY:
                self._json(400, {"error": f"body must be 1-{MAX_BODY} bytes of JSON with a Content-Length"})
                return
            try:
                body = json.loads(self.rfile.read(int(length)))
            except (ValueError, RecursionError):  # bad JSON or UTF-8, a number past int's digit limit, deep nesting
                self._json(400, {"error": "body is not valid JSON"})
                return
            if not isinstance(body, dict):
                self._json(400, {"error": "expected a JSON object"})
                return
            if unexpected := sorted(set(body) - VOTE_FIELDS):
                self._json(400, {"error": f"unexpected field(s): {', '.join(unexpected)}; "
                                          f"a vote has {', '.join(sorted(VOTE_FIELDS))}"})
                return
            try:
                result = store.vote(rater, body.get("task_id"), body.get("choice"), body.get("flags"))
            except RepeatVote as e:
                self._json(409, {"error": str(e)})
                return
            except VoteError as e:
                self._json(400, {"error": str(e)})
                return
            self._json(200, {"ok": True, "task_id": result["task_id"]})  # the winner stays hidden: blind

        def log_message(self, fmt: str, *args: Any) -> None:
            # Request lines carry ?token=, a rater's credential: keep it out of the log.
            log.info("%s %s", self.address_string(), TOKEN_IN_URL.sub("token=[redacted]", fmt % args))

    return HumanEvalServer((host, port), Handler, timeout, max_threads)


def serve_in_thread(server: HumanEvalServer) -> threading.Thread:
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    t.start()
    return t
