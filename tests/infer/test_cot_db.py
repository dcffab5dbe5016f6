"""Medprompt's self-generated CoT database: verified-only, shuffle-aware, resumable, and what kNN shows."""

from __future__ import annotations

import json
import re

import pytest

from aloe.cli import main
from aloe.infer.config import InferConfig
from aloe.infer.cot_db import build_cot_db, meta_path
from aloe.infer.shuffle import permutations
from aloe.infer.strategies import build_strategy
from aloe.io import iter_jsonl
from aloe.mcq.prompts import question_block
from aloe.records import MCQ

TOPICS = ["Which drug lowers blood pressure in a patient with hypertension?",
          "What is the first-line treatment of high blood pressure?",
          "Which bone of the forearm lies on the thumb side?",
          "What causes acne vulgaris in teenagers?",
          "Which nerve controls the lateral rectus muscle of the eye?",
          "Which hormone lowers blood glucose after a meal?"]


def _pool(source: str = "medqa") -> list[MCQ]:
    """Each option's text names its question, and the gold one says 'correct', so a scripted model
    can find (or miss) the gold option whatever order the options are shown in."""
    pool = []
    for i, question in enumerate(TOPICS):
        gold = "ABCD"[i % 4]
        options = {k: f"q{i} {'correct' if k == gold else 'wrong'} {k}" for k in "ABCD"}
        pool.append(MCQ(id=f"{source}-{i}", question=question, options=options, answer=gold, source=source,
                        explanation=f"DATASET EXPLANATION {i}"))
    return pool


def _knows(shown: dict[str, str], _params) -> str:
    letter = next(k for k, v in shown.items() if "correct" in v)
    return f"SELF-COT: option {letter} is the correct one.\nAnswer: {letter}"


def _rows(path) -> list[dict]:
    return [r for _, r in iter_jsonl(path)]


def test_only_chains_reaching_gold_are_kept_and_their_answers_map_back_through_the_shuffle(tmp_path, make_reader):
    pool = _pool()
    gen = make_reader(lambda shown, _p: "Thinking.\nAnswer: A")  # right only when gold is shown first
    meta = build_cot_db(gen, pool, tmp_path / "db.jsonl", attempts=4, seed=3, progress=False)
    first = {}
    for q in pool:
        hits = [a for a, order in enumerate(permutations(q, 4, 3)) if order[0] == q.answer]
        first[q.id] = hits[0] if hits else None
    assert None in first.values() and any(a for a in first.values())  # the check below covers both kinds
    rows = _rows(tmp_path / "db.jsonl")
    assert {r["id"]: r["attempt"] for r in rows} == {i: a for i, a in first.items() if a is not None}
    for r in rows:
        q = next(q for q in pool if q.id == r["id"])
        assert r["answer"] == "A" and r["gold"] == q.answer and r["order"][0] == q.answer
        assert r["order"] == permutations(q, 4, 3)[r["attempt"]]
        assert r["options"] == {k: q.options[o] for k, o in zip("ABCD", r["order"], strict=True)}
        assert r["cot"] == "Thinking.\nAnswer: A" and r["model"] == "prompt-reader"
    assert meta["counts"] == {"pool": 6, "verified": len(rows),
                              "tried": sum(4 if a is None else a + 1 for a in first.values()),
                              "verified_by_attempt": [sum(a == k for a in first.values()) for k in range(4)]}
    assert [p.temperature for _, p in gen.calls] == [0.0, 0.7, 0.7, 0.7]
    assert len({p.seed for _, p in gen.calls}) == 4


def test_retries_sample_and_unshuffled_options_keep_their_order(tmp_path, make_reader):
    gen = make_reader(lambda shown, p: _knows(shown, p) if p.temperature > 0 else "Answer: D")
    meta = build_cot_db(gen, _pool(), tmp_path / "db.jsonl", attempts=2, shuffle=False, progress=False)
    rows = _rows(tmp_path / "db.jsonl")
    # greedy answers D: right only where gold is D; every other question is verified by the sampled retry
    assert meta["counts"]["verified_by_attempt"] == [1, 5] and len(rows) == 6
    assert all(r["options"] == q.options and r["answer"] == q.answer for r, q in zip(rows, _pool(), strict=True))


class Crashing:
    """Answers one conversation at a time, reporting each, and dies after `limit` completions.

    It knows every question but q1, whatever order the options are shown in."""

    name = "scripted"

    def __init__(self, limit: int | None = None):
        self.limit, self.done = limit, []

    def chat(self, conversations, params, on_done=None):
        out = []
        for i, c in enumerate(conversations):
            if self.limit is not None and len(self.done) >= self.limit:
                raise RuntimeError("killed")
            shown = dict(re.findall(r"^([A-D])\. (.*)$", c[-1]["content"], re.MULTILINE))
            text = "no idea" if "q1 " in c[-1]["content"] else _knows(shown, params)
            self.done.append(json.dumps([c, params.key()], sort_keys=True))
            out.append(text)
            if on_done:
                on_done([i], [text])
        return out


def test_a_rerun_pays_nothing_and_a_killed_build_resumes_without_asking_anything_twice(tmp_path):
    pool, db = _pool(), tmp_path / "db.jsonl"
    killed = Crashing(limit=4)
    with pytest.raises(RuntimeError, match="killed"):
        build_cot_db(killed, pool, db, attempts=3, progress=False)
    assert not db.exists() and not meta_path(db).exists()
    resumed = Crashing()
    meta = build_cot_db(resumed, pool, db, attempts=3, progress=False)
    assert not set(killed.done) & set(resumed.done)
    assert len(killed.done) == 4 and len(resumed.done) == 6 + 2 - 4  # q1 is never verified: 3 attempts
    clean = Crashing()
    build_cot_db(clean, pool, tmp_path / "clean.jsonl", attempts=3, progress=False)
    assert sorted(killed.done + resumed.done) == sorted(clean.done)
    assert db.read_text() == (tmp_path / "clean.jsonl").read_text()
    assert meta["counts"] == {"pool": 6, "verified": 5, "tried": 8, "verified_by_attempt": [5, 0, 0]}

    before = db.stat().st_mtime_ns
    again = Crashing(limit=0)  # any completion asked would raise
    assert build_cot_db(again, pool, db, attempts=3, progress=False) == meta
    assert db.stat().st_mtime_ns == before
    # other settings are another database, yet the completions already paid for are reused
    more = Crashing()
    assert build_cot_db(more, pool, db, attempts=4, progress=False)["counts"]["tried"] == 9
    assert len(more.done) == 1


def _strategy(db, k: int = 2, tmp_path=None) -> object:
    return build_strategy("medprompt", InferConfig(k_shots=k, n_samples=2, cot_db=db, index_dir=tmp_path))


def test_a_database_from_another_model_or_pool_or_too_small_is_refused(tmp_path, make_reader):
    pool, db = _pool(), tmp_path / "db.jsonl"
    builder = make_reader(_knows)
    builder.name = "model-a"
    build_cot_db(builder, pool, db, attempts=1, progress=False)
    q = MCQ(id="t", question="Which drug treats hypertension?", options={"A": "x", "B": "y"}, answer="A", source="medqa")
    other = make_reader(_knows)
    other.name = "model-b"
    with pytest.raises(ValueError, match=rf"CoT database {db} was built by model 'model-a'.*'model-b'"):
        _strategy(db, tmp_path=tmp_path).predict(other, [q], pool, progress=False)
    changed = [*pool[:2], MCQ(**{**pool[2].to_dict(), "question": "Another question?"}), *pool[3:]]
    with pytest.raises(ValueError, match=rf"{db} was built on another few-shot pool.*1 of its 6 examples.*'medqa-2', changed"):
        _strategy(db, tmp_path=tmp_path).predict(builder, [q], changed, progress=False)
    with pytest.raises(ValueError, match=r"another few-shot pool \(6 questions of \['medqa'\].*\['medmcqa'\], and the "
                                         r"database has no question from them"):
        _strategy(db, tmp_path=tmp_path).predict(builder, [q], _pool("medmcqa"), progress=False)
    with pytest.raises(ValueError, match=rf"{db} has 6 verified chains of thought.*fewer than the 7 kNN shots"):
        _strategy(db, k=7, tmp_path=tmp_path).predict(builder, [q], pool, progress=False)
    with pytest.raises(FileNotFoundError, match="CoT database not found"):
        _strategy(tmp_path / "none.jsonl", tmp_path=tmp_path).predict(builder, [q], pool, progress=False)


def test_medprompt_shows_the_models_own_verified_chains_not_the_dataset_explanations(tmp_path, make_reader):
    pool, db = _pool(), tmp_path / "db.jsonl"
    build_cot_db(make_reader(_knows), pool, db, attempts=1, progress=False)
    rows = {r["id"]: r for r in _rows(db)}
    q = MCQ(id="t", question="Which medication treats hypertension?", options={"A": "x", "B": "y"}, answer="A",
            source="medqa")
    gen = make_reader(lambda shown, _p: "Answer: A")
    [r] = _strategy(db, tmp_path=tmp_path).predict(gen, [q], pool, progress=False)
    assert set(r.shot_ids) == {"medqa-0", "medqa-1"}  # the kNN step still picks the nearest questions
    for msgs in gen.prompts:
        assert "DATASET EXPLANATION" not in json.dumps(msgs)
        for (user, assistant), sid in zip(zip(msgs[1:-1:2], msgs[2:-1:2]), r.shot_ids, strict=True):
            row = rows[sid]
            shown = MCQ(id=sid, question=row["question"], options=row["options"], answer=row["answer"], source="x")
            assert user["content"] == question_block(shown)  # the options in the order the chain was written for
            # the model's closing answer line is replaced by the canonical one, never doubled
            assert assistant["content"] == f"SELF-COT: option {row['answer']} is the correct one.\nAnswer: {row['answer']}"

    explained = make_reader(lambda shown, _p: "Answer: A")
    build_strategy("medprompt", InferConfig(k_shots=2, n_samples=2, index_dir=tmp_path)).predict(
        explained, [q], pool, progress=False)
    assert "DATASET EXPLANATION" in json.dumps(explained.prompts[0]) and "SELF-COT" not in json.dumps(explained.prompts)


def test_strategy_eval_passes_the_database_through_and_its_content_keys_the_results(tiny_checkpoint, tmp_path,
                                                                                     make_reader):
    from aloe.infer.strategy_eval import StrategyEvalRequest, run_strategy_eval
    from aloe.mcq.benchmarks import BENCHMARKS, load_split
    from aloe.models.completion_cache import CachedGenerator
    from aloe.models.loading import weights_fingerprint

    model = str(tiny_checkpoint)
    db = tmp_path / "db.jsonl"
    builder = CachedGenerator(make_reader(lambda shown, _p: "SELF-COT guess.\nAnswer: A"), tmp_path / "c",
                              identity=weights_fingerprint(model))
    pool = load_split(BENCHMARKS["medqa"], "fewshot")[:12]  # a part of the pool the run draws from
    meta = build_cot_db(builder, pool, db, attempts=3, progress=False)
    assert meta["counts"]["verified"] >= 1
    gen = make_reader(lambda shown, _p: "Answer: B")
    cfg = InferConfig(k_shots=1, n_samples=1, max_new_tokens=8, retry_temperatures=[], cot_db=db,
                      index_dir=tmp_path / "idx")

    def run():
        return run_strategy_eval(StrategyEvalRequest(
            model=model, benchmarks=[BENCHMARKS["medqa"]], strategies=["medprompt"], config=cfg,
            out_dir=tmp_path / "o", limit=2, progress=False, generator=gen))

    run()
    preds = _rows(tmp_path / "o" / "medqa" / "medprompt.jsonl")
    assert {s for p in preds for s in p["shot_ids"]} <= {r["id"] for r in _rows(db)}
    assert "SELF-COT guess." in json.dumps(gen.prompts)
    first = (tmp_path / "o" / "medqa" / "medprompt.metrics.json").read_text()
    build_cot_db(builder, pool, db, attempts=4, progress=False)  # rebuilt under the same path
    run()
    assert json.loads((tmp_path / "o" / "medqa" / "medprompt.metrics.json").read_text())["fingerprint"] != \
        json.loads(first)["fingerprint"]


def test_cli_builds_on_the_run_pool_reruns_without_the_model_and_run_refuses_too_few(tiny_checkpoint, tmp_path,
                                                                                   monkeypatch, capsys):
    db = tmp_path / "db.jsonl"
    build = ["infer", "build-cot-db", "--model", str(tiny_checkpoint), "--benchmarks", "medqa", "--limit", "3",
             "--attempts", "2", "--max-new-tokens", "4", "--out", str(db), "--no-progress"]
    assert main(build) == 0
    meta = json.loads(meta_path(db).read_text())
    assert meta["counts"]["pool"] == 3 and 3 <= meta["counts"]["tried"] <= 6
    assert meta["pool"]["sources"] == ["medqa"] and (tmp_path / "db.cache" / "completions.sqlite").is_file()
    printed = capsys.readouterr().out

    from aloe.models import hf

    monkeypatch.setattr(hf.HFCausalLM, "from_spec", classmethod(lambda *a, **k: pytest.fail("model loaded")))
    assert main(build) == 0 and capsys.readouterr().out == printed
    monkeypatch.undo()

    run = ["infer", "run", "--model", str(tiny_checkpoint), "--strategy", "medprompt", "--benchmarks", "medqa",
           "--limit", "1", "--cot-db", str(db), "--k-shots", "4", "--n-samples", "1", "--max-new-tokens", "4",
           "--retry-temperatures", "--out", str(tmp_path / "o"), "--no-progress"]
    assert main(run) == 2
    assert f"CoT database {db} has" in capsys.readouterr().err
