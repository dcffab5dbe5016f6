"""A client for any OpenAI-compatible chat server (vLLM, llama.cpp server, TGI, hosted APIs).

Standard library only, so a teacher or judge behind HTTP costs no extra dependency. Requests run
on a bounded thread pool; 429, 5xx, connection errors and time-outs are retried with exponential
backoff and jitter, honouring Retry-After. A request that still fails after every retry does not
stop the others: every completion is handed to `on_done` (and so cached) as it arrives, and the
batch raises at the end, naming how many requests failed. Only when `DOWN_AFTER` requests fail in a
row (the server looks down) are the requests not yet sent cancelled.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import random
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any

from tqdm.auto import tqdm

from aloe.models.generator import GenParams, Messages

log = logging.getLogger(__name__)

RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
# Requests failed in a row, each after all its retries, that mean the server is down (or a pool's
# worth, when more run at once): the rest of the batch is not sent.
DOWN_AFTER = 8


class OpenAIError(RuntimeError):
    pass


class OpenAIChat:
    def __init__(self, base_url: str, model: str, api_key: str | None = None, max_concurrency: int = 8,
                 timeout: float = 120.0, max_retries: int = 6, backoff: float = 0.5, progress: bool = True):
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.name = f"openai:{self.base_url}#{model}"
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self.max_concurrency, self.timeout = max_concurrency, timeout
        self.max_retries, self.backoff = max_retries, backoff
        self.progress = progress

    def _post(self, payload: dict[str, Any]) -> dict[str, Any]:
        data = json.dumps(payload).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        last: str = ""
        for attempt in range(self.max_retries + 1):
            req = urllib.request.Request(f"{self.base_url}/chat/completions", data=data, headers=headers)
            wait = self.backoff * (2 ** attempt) * (0.5 + random.random())
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    body = json.loads(resp.read())
                if not isinstance(body, dict) or not body.get("choices"):
                    raise OpenAIError(f"{self.base_url}: response has no choices: {str(body)[:200]}")
                return body
            except urllib.error.HTTPError as e:
                last = f"HTTP {e.code}: {e.read()[:200]!r}"
                if e.code not in RETRYABLE_STATUS:
                    raise OpenAIError(f"{self.base_url}: {last}") from None
                if ra := e.headers.get("Retry-After"):
                    try:
                        wait = max(wait, float(ra))
                    except ValueError:
                        pass
            except (OSError, http.client.HTTPException, json.JSONDecodeError) as e:  # URLError, time-outs, IncompleteRead
                last = f"{type(e).__name__}: {e}"
            if attempt < self.max_retries:
                log.info("retrying %s in %.1fs after %s", self.base_url, wait, last)
                time.sleep(wait)
        raise OpenAIError(f"{self.base_url}: gave up after {self.max_retries + 1} attempts; last error {last}")

    def _complete(self, messages: Messages, params: GenParams) -> str:
        payload: dict[str, Any] = {
            "model": self.model, "messages": messages, "max_tokens": params.max_new_tokens,
            "temperature": params.temperature, "top_p": params.top_p, "seed": params.seed,
        }
        if params.stop:
            payload["stop"] = params.stop
        body = self._post(payload)
        content = (body["choices"][0].get("message") or {}).get("content")
        return content if isinstance(content, str) else ""

    def chat(self, conversations: Sequence[Messages], params: GenParams,
             on_done: Callable[[list[int], list[str]], None] | None = None) -> list[str]:
        out: list[str] = [""] * len(conversations)
        failures: list[str] = []
        in_a_row, down_after = 0, max(DOWN_AFTER, self.max_concurrency)
        with ThreadPoolExecutor(self.max_concurrency) as pool, \
                tqdm(total=len(conversations), desc=self.model, disable=not self.progress, leave=False) as bar:
            futures = {pool.submit(self._complete, list(c), params): i for i, c in enumerate(conversations)}
            try:
                for fut in as_completed(futures):
                    if fut.cancelled():
                        continue
                    i = futures[fut]
                    try:
                        out[i] = fut.result()
                    except OpenAIError as e:
                        failures.append(str(e).removeprefix(f"{self.base_url}: "))
                        in_a_row += 1
                        if in_a_row == down_after:
                            for f in futures:
                                f.cancel()
                    else:
                        in_a_row = 0
                        if on_done is not None:
                            on_done([i], [out[i]])
                    bar.update(1)
            except BaseException:
                for f in futures:
                    f.cancel()
                raise
        if failures:
            unsent = sum(f.cancelled() for f in futures)
            raise OpenAIError(
                f"{self.base_url}: {len(failures) + unsent} of {len(conversations)} requests failed"
                + (f" ({unsent} not sent after {down_after} failures in a row)" if unsent else "")
                + f"; first error: {failures[0]}")
        return out
