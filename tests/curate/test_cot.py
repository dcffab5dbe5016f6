"""CoT synthesis against a scripted OpenAI-compatible teacher on loopback: verification, resume, faults."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from aloe.curate.config import CotConfig, SourceConfig
from aloe.curate.cot import SynthesiseCoT, teacher_prompt, verified_chain
from aloe.curate.items import Item
from aloe.curate.sources import load_source
from aloe.io import iter_jsonl, write_jsonl


def _mcqs(n: int) -> list[Item]:
    items = load_source(SourceConfig(name="medmcqa", format="aloe_json", cot=True,
                                     path="aloe_prompt_engine/medmcqa/medmcqa_val.json", limit=n))
    assert len(items) == n
    return items


def _wrong(item: Item) -> str:
    assert item.mcq
    return next(k for k in item.mcq.options if k != item.mcq.answer)


def _cfg(url: str, **kw: object) -> CotConfig:
    base = dict(teacher=f"{url}#scripted", max_items=100, tries=3, temperatures=[0.0, 0.7, 1.0], max_new_tokens=64,
                concurrency=4, timeout=0.6, max_retries=4, backoff=0.01)
    base.update(kw)
    return CotConfig(**base)  # type: ignore[arg-type]


def test_prompt_is_gold_conditioned_and_asks_for_the_parts():
    m = _mcqs(1)[0].mcq
    assert m is not None
    prompt = teacher_prompt(m)[-1]["content"]
    assert f"The correct answer is {m.answer}. {m.options[m.answer]}" in prompt
    for part in ("Rephrase", "each option", "Summarise", f"Answer: {m.answer}"):
        assert part in prompt
    assert verified_chain("blah\nAnswer: " + m.answer, m) is not None
    assert verified_chain("blah\nAnswer: " + _wrong(_mcqs(1)[0]), m) is None


def test_only_gold_matching_chains_are_kept(serve_teacher, tmp_path):
    items = _mcqs(6)
    q = [i.mcq.question for i in items]  # type: ignore[union-attr]
    gold = [i.mcq.answer for i in items]  # type: ignore[union-attr]
    script = {
        q[0]: [gold[0]],                                   # right at once
        q[1]: [_wrong(items[1]), gold[1]],                 # right on the second try
        q[2]: [_wrong(items[2]), None, gold[2]],           # right on the last try
        q[3]: [_wrong(items[3])],                          # always wrong -> dropped
        q[4]: [None],                                      # never answers -> dropped
        q[5]: [_wrong(items[5]), _wrong(items[5]), _wrong(items[5]), gold[5]],  # right only after the budget
    }
    teacher = serve_teacher(script=script)
    step = SynthesiseCoT(_cfg(f"openai:{teacher.url}"), tmp_path / "cache")
    out = step(items)
    cot = {i.id.removesuffix("-cot"): i for i in out if i.group == "cot"}
    assert set(cot) == {items[0].id, items[1].id, items[2].id}
    for it in cot.values():
        assert it.meta["cot_chain"].rstrip().endswith(f"Answer: {it.mcq.answer}")  # type: ignore[union-attr]
    assert [cot[items[k].id].meta["cot_tries"] for k in range(3)] == [1, 2, 3]
    assert step.stats.dropped["cot_never_matched_gold"]["medmcqa"] == 3
    assert step.summary["verified"] == 3 and step.summary["attempted"] == 6
    # rising temperature and a new seed on each try
    assert [(r["temperature"], r["seed"]) for r in teacher.requests_for(q[3])] == [(0.0, 0), (0.7, 1), (1.0, 2)]
    assert len(teacher.requests_for(q[0])) == 1


def test_injected_faults_are_retried_and_lose_nothing(serve_teacher, tmp_path):
    items = _mcqs(6)
    script = {i.mcq.question: [i.mcq.answer] for i in items}  # type: ignore[union-attr]
    q = list(script)
    faults = {q[0]: [429, 429], q[1]: [500], q[2]: ["slow"], q[3]: [500, "slow", 429]}
    teacher = serve_teacher(script=script, faults=faults)
    step = SynthesiseCoT(_cfg(f"openai:{teacher.url}"), tmp_path / "cache")
    out = step(items)
    assert sum(i.group == "cot" for i in out) == 6
    assert step.summary["error"] is None
    assert len(teacher.requests_for(q[0])) == 3 and len(teacher.requests_for(q[3])) == 4
    # a rerun is answered from the cache: the server sees nothing new
    before = len(teacher.log)
    again = SynthesiseCoT(_cfg(f"openai:{teacher.url}"), tmp_path / "cache")(items)
    assert len(teacher.log) == before
    assert [i.meta.get("cot_chain") for i in again] == [i.meta.get("cot_chain") for i in out]


def test_teacher_that_keeps_failing_does_not_crash_or_lose_finished_work(serve_teacher, tmp_path):
    items = _mcqs(4)
    script = {i.mcq.question: [i.mcq.answer] for i in items}  # type: ignore[union-attr]
    q = list(script)
    teacher = serve_teacher(script=script, faults={q[3]: [500] * 50})
    cfg = _cfg(f"openai:{teacher.url}", concurrency=1, max_retries=2, on_teacher_error="continue")
    step = SynthesiseCoT(cfg, tmp_path / "cache")
    out = step(items)  # no exception: the failure is counted and reported
    assert step.summary["error"] and "gave up" in step.summary["error"]
    assert sum(step.stats.dropped["cot_teacher_error"].values()) == 4 - sum(i.group == "cot" for i in out)
    # what was answered before the failure is in the cache; once the server recovers, only the rest is asked
    answered = {r["question"] for r in teacher.log if r["fault"] is None}
    teacher.faults.clear()
    n = len(teacher.log)
    out2 = SynthesiseCoT(cfg, tmp_path / "cache")(items)
    assert sum(i.group == "cot" for i in out2) == 4
    assert not answered & {r["question"] for r in teacher.log[n:]}


def test_killed_run_resumes_without_repeating_completed_requests(serve_teacher, tmp_path):
    items = _mcqs(8)
    # a mix of right-at-once, right-later and never-right items, so several tries are in play
    script = {}
    for k, i in enumerate(items):
        m = i.mcq
        assert m is not None
        script[m.question] = [m.answer] if k % 3 == 0 else [_wrong(i), m.answer] if k % 3 == 1 else [_wrong(i)]
    inp, cache = tmp_path / "items.jsonl", tmp_path / "cache"
    write_jsonl(inp, (i.to_dict() for i in items))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc: list[subprocess.Popen[bytes]] = []
    kill_at = 6

    def kill(n: int) -> None:
        if n == kill_at and proc:
            time.sleep(0.5)  # let the client commit what it already received
            proc[0].send_signal(signal.SIGKILL)

    teacher = serve_teacher(script=script, on_request=kill)

    def run(out: Path) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "aloe.cli", "curate", "cot", str(inp), str(out),
                                 "--teacher", f"openai:{teacher.url}#scripted", "--cache-dir", str(cache),
                                 "--concurrency", "1", "--tries", "3", "--backoff", "0.01", "--timeout", "5"],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    proc.append(run(tmp_path / "first.jsonl"))
    proc[0].wait(timeout=120)
    assert proc[0].returncode == -signal.SIGKILL
    assert not (tmp_path / "first.jsonl").exists()
    first = [dict(r) for r in teacher.log]
    assert len(first) == kill_at
    completed = {(r["question"], r["seed"]) for r in first[: kill_at - 1]}

    proc.clear()
    second = run(tmp_path / "second.jsonl")
    assert second.wait(timeout=120) == 0, second.stderr.read().decode()[-2000:]
    asked_again = {(r["question"], r["seed"]) for r in teacher.log[kill_at:]}
    assert not completed & asked_again
    rows = [Item.from_dict(r) for _, r in iter_jsonl(tmp_path / "second.jsonl")]
    verified = {i.id.removesuffix("-cot") for i in rows if i.group == "cot"}
    assert verified == {i.id for k, i in enumerate(items) if k % 3 != 2}
    summary = json.loads(second.stdout.read().decode())["cot"]
    assert summary["cache_hits"] >= len(completed)
