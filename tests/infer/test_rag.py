"""RAG: chunking, BM25 + dense + fused retrieval over the packaged slice, passages cited in the prompt."""

from __future__ import annotations

import json

import pytest

from aloe.infer.config import PACKAGED_RAG_CORPUS, InferConfig, RagConfig
from aloe.infer.rag.corpus import chunk_text, read_passages
from aloe.infer.rag.fusion import reciprocal_rank_fusion
from aloe.infer.rag.retriever import Retriever
from aloe.infer.strategies import build_strategy
from aloe.io import RecordError
from aloe.records import MCQ


def test_chunks_respect_the_limit_and_keep_all_words():
    text = "\n".join(["Short paragraph one."] + [" ".join(f"w{i}_{j}." for j in range(60)) for i in range(5)])
    chunks = chunk_text(text, 200)
    assert all(len(c) <= 200 for c in chunks)
    assert " ".join(chunks).split() == text.split()


def test_rrf_rewards_agreement_and_uses_the_constant():
    fused = dict(reciprocal_rank_fusion([["a", "b", "c"], ["b", "c", "a"]], k=60))
    assert fused["b"] == pytest.approx(1 / 62 + 1 / 61)
    assert max(fused, key=fused.get) == "b"
    small = reciprocal_rank_fusion([["a", "b"], ["b", "x"]], k=1)
    assert small[0] == ("b", pytest.approx(1 / 3 + 1 / 2))


def test_bad_corpus_records_name_line_and_field(tmp_path):
    bad = tmp_path / "c.jsonl"
    bad.write_text(json.dumps({"id": "a", "text": "ok"}) + "\n" + json.dumps({"id": "b"}) + "\n")
    with pytest.raises(RecordError, match=r"c.jsonl:2 field 'text'"):
        list(read_passages(bad))


def test_repeated_ids_are_made_unique():
    ids = [p.id for p in read_passages(PACKAGED_RAG_CORPUS)]
    assert len(ids) == len(set(ids)) == 575


@pytest.fixture(scope="module")
def retriever(tmp_path_factory):
    """A 70-passage cut of the packaged slice (embedding all 575 takes minutes on a busy CPU)."""
    lines = PACKAGED_RAG_CORPUS.read_text(encoding="utf-8").split("\n")
    root = tmp_path_factory.mktemp("rag")
    corpus = root / "corpus.jsonl"
    corpus.write_text("\n".join(lines[:40] + lines[-31:]), encoding="utf-8")
    return Retriever(corpus, root / "idx")


QUERY = "Does telephone counseling help smokers quit after the first intervention?"


@pytest.mark.parametrize("method", ["bm25", "dense", "fused"])
def test_each_retriever_finds_the_source_abstract(retriever, method):
    hits = retriever.search([QUERY, "thyroid cancer symptoms"], 5, method)
    assert len(hits) == 2 and all(len(h) == 5 for h in hits)
    assert any(h.id.startswith("pubmed:10808977:") for h in hits[0])
    assert [h.score for h in hits[0]] == sorted((h.score for h in hits[0]), reverse=True)


def test_indexes_persist_and_reload(retriever, tmp_path):
    retriever.warm("fused")
    again = Retriever(retriever.corpus, retriever.root.parent)
    assert again.search([QUERY], 3, "fused") == retriever.search([QUERY], 3, "fused")
    assert (retriever.root / "bm25" / "complete.json").is_file()


def test_rag_strategy_shows_passages_with_ids(retriever, make_reader):
    gen = make_reader(lambda _s, _p: "Per [x] the answer is... Answer: A")
    q = MCQ(id="q", question=QUERY, options={"A": "yes", "B": "no", "C": "maybe"}, answer="A", source="t")
    cfg = InferConfig(index_dir=retriever.root.parent, rag=RagConfig(corpus=retriever.corpus, top_k=2))
    [r] = build_strategy("rag", cfg).predict(gen, [q], progress=False)
    assert len(r.passage_ids) == 2
    user = gen.prompts[0][-1]["content"]
    assert all(f"[{pid}]" in user for pid in r.passage_ids)
    assert user.index("Passages:") < user.index(f"Question: {QUERY}")
    assert "cite" in gen.prompts[0][0]["content"]
