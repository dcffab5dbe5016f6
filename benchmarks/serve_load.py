"""Load test of `aloe serve`: latency, throughput and errors under concurrent clients.

Starts `aloe serve` on the embedded model (its checkpoint converts once and is cached) on
127.0.0.1 with an OS-chosen port, sends one warm-up request, then `--requests` chat completions
(short medical questions, greedy, `--max-tokens` each) from `--clients` concurrent clients, each
sending its next request when its last one is answered. Prints p50/p95 latency, throughput in
requests/s and completion tokens/s (from each reply's `usage`), error counts by status and the CPU.
Everything is bounded: the server start by `--start-timeout`, each request by `--request-timeout`
and the whole run by `--max-seconds` (clients stop sending when it passes). Exits 1 on any error
other than a 429, the one refusal the server gives on purpose (when more than `--max-concurrency`
requests are in it).

On a CPU shared with other jobs, give the server one torch thread (`--threads 1`): two threads
that spin waiting for each other on a busy 2-core machine made generation 10-14x slower
(SmolLM2-135M, 32 tokens: 0.7 vs 9.5 tokens/s alone, 2.9 vs 18.4 at batch 8, load average ~5).

    python benchmarks/serve_load.py --requests 200 --clients 16 --max-tokens 32 --threads 1
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from aloe.models.spec import DEFAULT_MODEL

QUESTIONS = [
    "What is the first-line treatment for anaphylaxis?",
    "Which vitamin deficiency causes scurvy?",
    "What does a high TSH level usually indicate?",
    "Name two symptoms of hypoglycaemia.",
    "What is the normal resting heart rate of an adult?",
    "Which organ produces insulin?",
    "What is the antidote for paracetamol overdose?",
    "What does BMI stand for?",
]


@dataclass
class Result:
    status: int | str  # the HTTP status, or the error that left no HTTP answer
    latency_s: float
    completion_tokens: int = 0


def cpu() -> tuple[str, list[str]]:
    """The CPU model and the flags that decide bf16 speed (AVX-512 BF16, AMX)."""
    out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    model = re.search(r"^Model name:\s*(.+)$", out, re.MULTILINE)
    flags = re.search(r"^Flags:\s*(.+)$", out, re.MULTILINE)
    wanted = sorted(f for f in (flags.group(1).split() if flags else []) if f == "avx512_bf16" or f.startswith("amx"))
    return (model.group(1).strip() if model else "unknown"), wanted


def start_server(args: argparse.Namespace) -> tuple[subprocess.Popen[str], int]:
    cmd = [sys.executable, "-m", "aloe.cli", "serve", "--model", args.model, "--strategy", "none",
           "--host", "127.0.0.1", "--port", "0", "--batch-size", str(args.batch_size),
           "--max-concurrency", str(args.max_concurrency)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)} if args.threads else None
    with open(args.server_log, "w") as log:  # the child keeps its own handle
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True, env=env)
    port: list[int] = []

    def read() -> None:  # the readiness line, read off the main thread so the wait can time out
        for line in proc.stdout:  # type: ignore[union-attr]
            if m := re.search(r"on http://127\.0\.0\.1:(\d+)/v1", line):
                port.append(int(m.group(1)))
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(args.start_timeout)
    if not port:
        stop_server(proc)
        raise SystemExit(f"aloe serve did not start within {args.start_timeout:g} s (exit code {proc.returncode}); "
                         f"see {args.server_log}")
    return proc, port[0]


def stop_server(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def request(port: int, args: argparse.Namespace, i: int) -> Result:
    body = json.dumps({"model": args.model, "max_tokens": args.max_tokens, "temperature": 0,
                       "messages": [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}]})
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=args.request_timeout)
    try:
        conn.request("POST", "/v1/chat/completions", body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
    except OSError as e:  # refused, reset, timed out
        return Result(type(e).__name__, time.perf_counter() - t0)
    finally:
        conn.close()
    latency = time.perf_counter() - t0
    tokens = json.loads(data)["usage"]["completion_tokens"] if resp.status == 200 else 0
    return Result(resp.status, latency, tokens)


def run_load(port: int, args: argparse.Namespace) -> tuple[list[Result], float]:
    ids = itertools.count()
    lock = threading.Lock()
    results: list[Result] = []
    stop_at = time.monotonic() + args.max_seconds

    def client() -> None:
        while time.monotonic() < stop_at:
            with lock:
                i = next(ids)
            if i >= args.requests:
                return
            r = request(port, args, i)
            with lock:
                results.append(r)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(args.clients) as pool:
        for f in [pool.submit(client) for _ in range(args.clients)]:
            f.result()
    return results, time.perf_counter() - t0


def percentile(xs: list[float], q: float) -> float:
    return statistics.quantiles(xs, n=100, method="inclusive")[round(q) - 1] if len(xs) > 1 else xs[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=16, help="rows the server decodes together")
    ap.add_argument("--max-concurrency", type=int, default=16, help="the server's admission bound")
    ap.add_argument("--threads", type=int, default=0, help="the server's torch threads (default: torch's choice)")
    ap.add_argument("--start-timeout", type=float, default=300.0)
    ap.add_argument("--request-timeout", type=float, default=300.0)
    ap.add_argument("--max-seconds", type=float, default=900.0, help="no request is sent after this")
    ap.add_argument("--server-log", default=os.path.join(tempfile.gettempdir(), "aloe-serve-load.log"),
                    help="where the server's stderr goes")
    args = ap.parse_args()

    model, flags = cpu()
    print(f"CPU: {model}, {os.cpu_count()} CPUs; flags: {' '.join(flags) or 'no avx512_bf16/amx'}", flush=True)
    t0 = time.perf_counter()
    proc, port = start_server(args)
    print(f"server up on port {port} in {time.perf_counter() - t0:.1f} s", flush=True)
    try:
        warm = request(port, args, 0)
        print(f"warm-up: HTTP {warm.status} in {warm.latency_s:.2f} s", flush=True)
        results, wall = run_load(port, args)
    finally:
        stop_server(proc)

    ok = [r for r in results if r.status == 200]
    errors = Counter(r.status for r in results if r.status != 200)
    cut = f" (stopped by --max-seconds {args.max_seconds:g})" if len(results) < args.requests else ""
    print(f"{len(results)} requests from {args.clients} clients, max_tokens {args.max_tokens}, in {wall:.1f} s{cut}")
    if ok:
        lat = [r.latency_s for r in ok]
        tokens = sum(r.completion_tokens for r in ok)
        print(f"latency p50 {percentile(lat, 50):.2f} s, p95 {percentile(lat, 95):.2f} s (successful requests)")
        print(f"throughput {len(ok) / wall:.2f} requests/s, {tokens / wall:.1f} completion tokens/s")
    print(f"errors by status: {dict(errors) or 'none'}")
    unplanned = sum(n for status, n in errors.items() if status != 429)
    if unplanned:
        print(f"server log: {args.server_log}")
    return 1 if unplanned or len(results) < args.requests or not ok else 0


if __name__ == "__main__":
    sys.exit(main())
