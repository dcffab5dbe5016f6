"""The human-evaluation web app: the standard library's ThreadingHTTPServer, one page, two API calls.

Every request needs the session's access token: `?token=` on the page, the X-Aloe-Token header on
the API (compared in constant time). Without it the answer is 401 and nothing else. Bodies are
capped and validated; the store refuses bad votes with 400 and repeats with 409.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from aloe.humaneval.page import PAGE
from aloe.humaneval.store import Store, VoteError

log = logging.getLogger(__name__)
MAX_BODY = 16_384


def make_server(store: Store, token: str, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    if len(token) < 16:
        raise ValueError("the access token must be at least 16 characters")

    class Handler(BaseHTTPRequestHandler):
        server_version = "aloe-human-eval"

        def _send(self, status: int, body: bytes, ctype: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Content-Security-Policy", "default-src 'self'; script-src 'unsafe-inline'; "
                             "style-src 'unsafe-inline'")
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, data: Any) -> None:
            self._send(status, json.dumps(data).encode(), "application/json")

        def _authorised(self, query: dict[str, list[str]]) -> bool:
            given = self.headers.get("X-Aloe-Token") or (query.get("token") or [""])[0]
            if hmac.compare_digest(given.encode(), token.encode()):
                return True
            self._json(401, {"error": "access token missing or wrong"})
            return False

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            query = parse_qs(url.query)
            if not self._authorised(query):
                return
            if url.path == "/":
                self._send(200, PAGE.encode(), "text/html; charset=utf-8")
            elif url.path == "/api/next":
                try:
                    task, done, total = store.next_task((query.get("rater") or [""])[0])
                except VoteError as e:
                    self._json(400, {"error": str(e)})
                    return
                payload = None if task is None else {"id": task.id, "question": task.question,
                                                     "answer_a": task.answer_a, "answer_b": task.answer_b}
                self._json(200, {"task": payload, "done": done, "total": total})
            else:
                self._json(404, {"error": "not found"})

        def do_POST(self) -> None:
            url = urlsplit(self.path)
            if not self._authorised(parse_qs(url.query)):
                return
            if url.path != "/api/vote":
                self._json(404, {"error": "not found"})
                return
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            if not 0 < length <= MAX_BODY:
                self._json(400, {"error": f"body must be 1-{MAX_BODY} bytes of JSON"})
                return
            try:
                body = json.loads(self.rfile.read(length))
                if not isinstance(body, dict):
                    raise VoteError("expected a JSON object")
                result = store.vote(body.get("rater"), body.get("task_id"), body.get("choice"), body.get("flags"))
            except json.JSONDecodeError:
                self._json(400, {"error": "body is not valid JSON"})
                return
            except VoteError as e:
                self._json(409 if "already voted" in str(e) else 400, {"error": str(e)})
                return
            self._json(200, {"ok": True, "task_id": result["task_id"]})  # the winner stays hidden: blind

        def log_message(self, fmt: str, *args: Any) -> None:
            log.info("%s " + fmt, self.address_string(), *args)

    return ThreadingHTTPServer((host, port), Handler)


def serve_in_thread(server: ThreadingHTTPServer) -> threading.Thread:
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    t.start()
    return t
