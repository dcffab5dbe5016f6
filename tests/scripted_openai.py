"""A scripted OpenAI-compatible chat server on 127.0.0.1, standing in for a remote teacher, judge or
target: aloe's real HTTP client, cache and retries talk to it. It answers at most `max_requests`
requests (503 after that) so a runaway loop in a test ends by itself."""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class ScriptedOpenAIServer:
    def __init__(self, reply: Callable[[dict[str, Any]], str], max_requests: int = 5000):
        self.requests: list[dict[str, Any]] = []  # every request body, in arrival order
        lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with lock:
                    outer.requests.append(body)
                    over = len(outer.requests) > max_requests
                if over:
                    self.send_error(503)
                    return
                data = json.dumps({"choices": [{"message": {"role": "assistant", "content": reply(body)},
                                                "finish_reason": "stop"}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def spec(self, model: str) -> str:
        return f"openai:{self.url}#{model}"

    def per_model(self) -> Counter[str]:
        return Counter(r["model"] for r in self.requests)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=5)
