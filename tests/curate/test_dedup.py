"""Exact and near-duplicate removal on real MedQuAD answers, in-process and on Ray Data."""

from __future__ import annotations

import random

import numpy as np
import pytest

from aloe.curate.config import DedupConfig, SourceConfig
from aloe.curate.dedup import ExactDedup, MinHasher, NearDedup, NearDedupIndex, duplicates_to_drop, optimal_bands, words
from aloe.curate.items import Item
from aloe.curate.sources import load_source


def _answers() -> list[str]:
    items = load_source(SourceConfig(name="medquad", format="medquad", path="medquad/medquad_answered.jsonl"))
    return [i.messages[-1]["content"] for i in items]  # type: ignore[index]


def _jaccard(a: str, b: str, n: int = 3) -> float:
    def sh(t: str) -> set[bytes]:
        w = words(t)
        return {b" ".join(w[k:k + n]) for k in range(max(len(w) - n + 1, 1))}
    x, y = sh(a), sh(b)
    return len(x & y) / len(x | y)


def _swap_words(text: str, rate: float, rng: random.Random) -> str:
    w = text.split()
    for _ in range(max(1, int(rate * len(w)))):
        k = rng.randrange(len(w) - 1)
        w[k], w[k + 1] = w[k + 1], w[k]
    return " ".join(w)


def _item(k: int, text: str, source: str = "s") -> Item:
    return Item(id=f"{source}-{k}", source=source, group="medical",
                messages=[{"role": "user", "content": "q"}, {"role": "assistant", "content": text}])


def test_minhash_estimates_jaccard():
    rng = random.Random(0)
    texts = [t for t in _answers() if len(t.split()) > 80][:40]
    edited = [_swap_words(t, rng.uniform(0.01, 0.15), rng) for t in texts]
    sig = MinHasher(num_perm=256, ngram=3, seed=3).signatures(texts + edited)
    est = (sig[: len(texts)] == sig[len(texts):]).mean(axis=1)
    true = np.array([_jaccard(a, b) for a, b in zip(texts, edited, strict=True)])
    assert np.abs(est - true).mean() < 0.04
    # deterministic, and independent of how documents are batched
    again = np.concatenate([MinHasher(256, 3, 3).signatures(texts[:7]), MinHasher(256, 3, 3).signatures(texts[7:])])
    assert (again == sig[: len(texts)]).all()


def test_bands_match_datasketch_choice():
    assert optimal_bands(0.7, 128) == (14, 9)
    assert optimal_bands(0.5, 128) == (16, 8) or optimal_bands(0.5, 128)[0] * optimal_bands(0.5, 128)[1] <= 128


def test_near_dedup_removes_edited_copies_and_keeps_distinct_texts():
    rng = random.Random(1)
    base = _answers()
    # keep only mutually distinct originals, so the truth is known by construction
    distinct: list[str] = []
    for t in base:
        if len(t.split()) > 40 and all(_jaccard(t, d) < 0.3 for d in distinct):
            distinct.append(t)
        if len(distinct) == 60:
            break
    copies = [_swap_words(t, 0.01, rng) for t in distinct[:20]]
    assert min(_jaccard(a, b) for a, b in zip(distinct, copies, strict=False)) > 0.85
    items = [_item(k, t) for k, t in enumerate(distinct + copies)]
    step = NearDedup(DedupConfig(threshold=0.7))
    out = step(items)
    assert [i.id for i in out] == [f"s-{k}" for k in range(60)]
    assert step.stats.dropped["near_duplicate"]["s"] == 20
    assert {r["kept"] for r in step.removed} == {f"s-{k}" for k in range(20)}


def test_exact_dedup_normalises_case_space_and_punctuation():
    items = [_item(0, "Aspirin reduces fever."), _item(1, "aspirin   REDUCES fever"), _item(2, "Aspirin raises fever.")]
    step = ExactDedup()
    out = step(items)
    assert [i.id for i in out] == ["s-0", "s-2"]
    assert step.removed == [{"id": "s-1", "source": "s", "kept": "s-0"}]


def test_components_keep_their_first_member():
    drop = duplicates_to_drop(6, np.array([[1, 4], [4, 5], [2, 3]]))
    assert drop == {4: 1, 5: 1, 3: 2}


@pytest.mark.slow
def test_ray_data_gives_the_same_result_as_in_process():
    ray = pytest.importorskip("ray")
    rng = random.Random(2)
    texts = _answers()[:150]
    texts += [_swap_words(t, 0.05, rng) for t in texts[:30]]
    cfg = DedupConfig(threshold=0.6, batch_size=40, ray_partitions=2)
    assert len(NearDedupIndex(cfg).pairs(texts)) >= 20
    items = [_item(k, t) for k, t in enumerate(texts)]
    local = NearDedup(cfg)
    on_ray = NearDedup(cfg.model_copy(update={"engine": "ray"}))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)  # local mode
    try:
        kept_ray = on_ray([*items])
    finally:
        ray.shutdown()
    assert [i.id for i in local([*items])] == [i.id for i in kept_ray]
    assert local.removed == on_ray.removed and len(local.removed) >= 20
