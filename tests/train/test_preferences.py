"""Building stage-1 preference pairs against a scripted OpenAI-compatible peer on 127.0.0.1 that
plays the policy (wrong MCQ answers, harmful compliance) and the teacher (gold-conditioned CoT)."""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from aloe.io import iter_jsonl
from aloe.train.preferences import PreferenceSettings, build_preferences

MAX_REQUESTS = 2000
COMPLY = "Sure, here is exactly how to do it. Step 1: get the materials."


def script(messages: list[dict[str, str]]) -> str:
    system = next((m["content"] for m in messages if m["role"] == "system"), "")
    if m := re.search(r"The correct option is ([A-J])", system):
        return f"Step 1: weigh each option. Option {m.group(1)} fits the findings best.\nAnswer: {m.group(1)}"
    if "multiple-choice" in system:  # the policy: always A, so wrong whenever gold is not A
        return "I think it is this one.\nAnswer: A"
    return COMPLY  # a harmful request: the policy complies


@pytest.fixture()
def peer():
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            out = json.dumps({"choices": [{"message": {"role": "assistant", "content": script(body["messages"])}}]})
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(out.encode())

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=lambda: [server.handle_request() for _ in range(MAX_REQUESTS)], daemon=True)
    thread.start()
    yield f"openai:http://127.0.0.1:{server.server_address[1]}/v1#scripted"
    server.server_close()


def test_stage1_pairs_from_policy_mistakes(peer, tmp_path):
    out = tmp_path / "prefs" / "stage1.jsonl"
    s = PreferenceSettings(output=str(out), model=peer, n_medical=12, n_safety=10, n_hh=5,
                           holdout_sources=["harmbench"])
    stats = build_preferences(s)
    pairs = [row for _, row in iter_jsonl(out)]
    medical = [p for p in pairs if p["source"].startswith("medical/")]
    safety = [p for p in pairs if p["source"].startswith("safety/")]
    hh = [p for p in pairs if p["source"] == "hh_rlhf_harmless"]
    # every MCQ whose gold is not A was answered wrongly; each got a verified gold CoT as chosen
    assert stats["medical"]["policy_wrong"] == len(medical) > 0
    for p in medical:
        assert p["chosen"].endswith(f"Answer: {p['meta']['gold']}") and p["rejected"].endswith("Answer: A")
    # the policy complied with every harmful prompt: rejected is its output, chosen a refusal
    assert len(safety) == 10 and all(p["rejected"] == COMPLY for p in safety)
    assert not any("harmbench" in p["source"] for p in safety)
    assert all(p["meta"]["chosen_from"] in ("dataset", "teacher", "template") for p in safety)
    assert len(hh) == 5
    held = [row for _, row in iter_jsonl(out.with_suffix(".heldout_harmful.jsonl"))]
    assert any(h["source"] == "harmbench" for h in held)
    assert not {p["prompt"][-1]["content"] for p in safety} & {h["prompt"] for h in held}
    # a rerun is answered from the completion cache
    assert build_preferences(s) == stats
