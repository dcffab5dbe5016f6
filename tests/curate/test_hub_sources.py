"""Corpus-scale sources: local shard folders and hub datasets, streamed row batch by row batch, and
Ray Data dedup that brings back only duplicate ids, never the corpus."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from aloe.curate.config import DedupConfig, SourceConfig
from aloe.curate.dedup import NearDedup, NearDedupIndex, duplicates_to_drop, forest_edges
from aloe.curate.items import Item
from aloe.curate.sources import iter_source, load_source
from aloe.io import RecordError

QA = {"question": "q", "answer": "a"}


def _qa_rows(start: int, n: int) -> list[dict[str, Any]]:
    return [{"q": f"What does drug {k} treat?", "a": f"Drug {k} treats condition {k}.", "k": k}
            for k in range(start, start + n)]


def _parquet_folder(root: Path) -> None:
    """root/corpus: three shards, the first larger than one read batch (1,024 rows), in small row groups."""
    folder = root / "corpus"
    (folder / "part").mkdir(parents=True)
    for name, start, n in (("a.parquet", 0, 2500), ("b.parquet", 2500, 10), ("part/c.parquet", 2510, 5)):
        pq.write_table(pa.Table.from_pylist(_qa_rows(start, n)), folder / name, row_group_size=500)
    (folder / "README.md").write_text("not a shard")


def test_parquet_folder_is_streamed_batch_by_batch_through_the_columns(tmp_path, monkeypatch):
    _parquet_folder(tmp_path)
    batches: list[int] = []
    iter_batches = pq.ParquetFile.iter_batches

    def counting(self: pq.ParquetFile, *a: Any, **kw: Any) -> Iterator[pa.RecordBatch]:
        for b in iter_batches(self, *a, **kw):
            batches.append(b.num_rows)
            yield b

    def whole(*a: Any, **kw: Any) -> None:
        raise AssertionError("a shard was read whole")

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", counting)
    monkeypatch.setattr(pq.ParquetFile, "read", whole)
    monkeypatch.setattr(pq, "read_table", whole)
    src = SourceConfig(name="p", format="parquet", path="corpus", columns={"question": "q", "answer": "a"})

    first = list(islice(iter_source(src, tmp_path), 3))
    assert [i.id for i in first] == ["p-a.parquet:1", "p-a.parquet:2", "p-a.parquet:3"]
    assert batches == [1024]  # only the first batch of the first shard was decoded

    batches.clear()
    items = load_source(src, tmp_path)
    assert len(items) == 2515 and max(batches) <= 1024 and len(batches) >= 5
    assert items[-1].id == "p-part/c.parquet:5"  # shards in name order, nested folders included
    assert items[2500].messages == [{"role": "user", "content": "What does drug 2500 treat?"},
                                    {"role": "assistant", "content": "Drug 2500 treats condition 2500."}]
    limited = load_source(src.model_copy(update={"limit": 2501, "columns": {"prompt": "q", "response": "a", "id": "k"}}),
                          tmp_path)
    assert len(limited) == 2501 and limited[-1].id == "p-2500"


def test_missing_column_names_the_shard_the_row_and_the_column(tmp_path):
    folder = tmp_path / "jl"
    folder.mkdir()
    (folder / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _qa_rows(0, 2)))
    bad = _qa_rows(2, 3)
    del bad[1]["a"]
    with gzip.open(folder / "b.jsonl.gz", "wt") as f:
        f.writelines(json.dumps(r) + "\n" for r in bad)
    src = SourceConfig(name="j", format="jsonl", path="jl", columns={"question": "q", "answer": "a"})
    items = iter_source(src, tmp_path)
    assert isinstance(items, Iterator)
    assert [i.id for i in islice(items, 3)] == ["j-a.jsonl:1", "j-a.jsonl:2", "j-b.jsonl.gz:1"]
    with pytest.raises(RecordError) as e:
        next(items)
    assert (e.value.path, e.value.where, e.value.field) == (str(folder / "b.jsonl.gz"), 2, "a")

    pq.write_table(pa.Table.from_pylist([{"q": "Is a missing column caught?"}]), tmp_path / "one.parquet")
    with pytest.raises(RecordError, match=r"one\.parquet:1 field 'a'"):
        load_source(SourceConfig(name="p", format="parquet", path="one.parquet", columns={"question": "q", "answer": "a"}),
                    tmp_path)
    with pytest.raises(ValueError, match="columns must name"):
        load_source(SourceConfig(name="p", format="parquet", path="one.parquet", columns={"question": "q"}), tmp_path)


def test_arrow_folder_written_by_datasets_with_sharegpt_turns_and_option_columns(tmp_path):
    from datasets import Dataset

    chats = [{"conversations": [{"from": "system", "value": "Be brief."}, {"from": "human", "value": f"Hi {k}?"},
                                {"from": "gpt", "value": f"Hello {k}."}]} for k in range(3)]
    Dataset.from_list(chats).save_to_disk(str(tmp_path / "chats"))  # Arrow stream shards + json metadata
    items = load_source(SourceConfig(name="c", format="arrow", path="chats", group="general",
                                     columns={"messages": "conversations"}), tmp_path)
    assert [m["role"] for m in items[2].messages or []] == ["system", "user", "assistant"]
    assert items[2].messages[1]["content"] == "Hi 2?" and items[2].group == "general"  # type: ignore[index]

    mcqs = [{"id": "x1", "question": "Which vitamin is fat-soluble?", "opa": "C", "opb": "B12", "opc": "K",
             "opd": "B1", "cop": 2}]
    with pa.OSFile(str(tmp_path / "mcq.arrow"), "wb") as f, pa.ipc.new_file(f, pa.Table.from_pylist(mcqs).schema) as w:
        w.write_table(pa.Table.from_pylist(mcqs))  # the IPC file layout too
    (item,) = load_source(SourceConfig(name="m", format="arrow", path="mcq.arrow", cot=True, columns={
        "id": "id", "question": "question", "options": ["opa", "opb", "opc", "opd"], "answer": "cop"}), tmp_path)
    assert item.mcq is not None and item.mcq.answer == "C" and item.mcq.options["C"] == "K" and item.cot


def _fake_hub(monkeypatch: pytest.MonkeyPatch, rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[int]]:
    import datasets

    calls: list[dict[str, Any]] = []
    produced: list[int] = []

    def gen() -> Iterator[dict[str, Any]]:
        for k, r in enumerate(rows):
            produced.append(k)
            yield r

    def load_dataset(path: str, name: str | None = None, **kw: Any) -> datasets.IterableDataset:
        calls.append({"path": path, "name": name, **kw})
        return datasets.IterableDataset.from_generator(gen)

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls, produced


def test_hub_source_is_streamed_and_mapped(monkeypatch):
    rows = [{"question": f"What is condition {k}?", "answer": f"Condition {k} is a disease.", "uid": f"u{k}"}
            for k in range(50)]
    calls, produced = _fake_hub(monkeypatch, rows)
    src = SourceConfig(name="h", format="hub", dataset="org/medqa-like", config="en", limit=3,
                       columns={"question": "question", "answer": "answer", "id": "uid"})
    assert src.path == "org/medqa-like"
    assert SourceConfig.model_validate(src.model_dump()) == src  # a dumped recipe validates again
    items = load_source(src)
    assert calls == [{"path": "org/medqa-like", "name": "en", "split": "train", "streaming": True}]
    assert [i.id for i in items] == ["h-u0", "h-u1", "h-u2"] and len(produced) <= 4  # a limit reads no further
    assert items[0].messages[1]["content"] == "Condition 0 is a disease."  # type: ignore[index]

    del rows[1]["answer"]
    with pytest.raises(RecordError, match=r"hub:org/medqa-like/en\[train\]:2 field 'answer'"):
        load_source(src)
    with pytest.raises(ValueError, match="format hub needs `dataset"):
        SourceConfig(name="h", format="hub", path="", columns=QA)
    with pytest.raises(ValueError, match="belong to format hub"):
        SourceConfig(name="h", format="jsonl", path="x.jsonl", split="train", columns=QA)


def test_hub_source_offline_and_uncached_names_source_and_dataset(tmp_path):
    """HF_HUB_OFFLINE=1 with an empty cache: no network attempt, a clear error (in a fresh process,
    since `datasets` reads the variable when it is imported)."""
    code = ("from aloe.curate.config import SourceConfig\nfrom aloe.curate.sources import load_source\n"
            "load_source(SourceConfig(name='aloe_general', format='hub', dataset='HPAI-BSC/no-such-set',"
            " columns={'messages': 'conversations'}))\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"),
           "HF_DATASETS_CACHE": str(tmp_path / "hf" / "datasets")}
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode != 0
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("ConnectionError: source 'aloe_general': hub dataset 'HPAI-BSC/no-such-set'"), last
    assert "HF_HUB_OFFLINE is set" in last and str(tmp_path / "hf" / "datasets") in last


def test_forest_edges_keep_the_components_with_fewer_edges():
    rng = np.random.default_rng(0)
    pairs = np.unique(np.sort(rng.integers(0, 60, size=(300, 2)), axis=1), axis=0)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    edges = forest_edges(pairs)
    assert len(edges) < len(pairs) and (edges[:, 0] < edges[:, 1]).all()
    assert duplicates_to_drop(60, edges) == duplicates_to_drop(60, pairs)


def _item(k: int, text: str) -> Item:
    return Item(id=f"s-{k}", source="s", group="medical",
                messages=[{"role": "user", "content": "q"}, {"role": "assistant", "content": text}])


@pytest.mark.slow
def test_ray_dedup_brings_back_ids_not_texts_and_matches_local(monkeypatch):
    ray = pytest.importorskip("ray", reason="Ray Data comes with the dev extra: pip install -e '.[dev]' (make test installs it)")
    rng = np.random.default_rng(3)
    vocab = [f"w{k}" for k in range(400)]
    texts = [" ".join(rng.choice(vocab, 60)) for _ in range(80)]
    texts += [t.replace(t.split()[5], "edited", 1) for t in texts[:15]]  # near copies
    texts += [texts[20]] * 25  # one bucket of 26 copies: 325 verified pairs, 25 forest edges per band
    cfg = DedupConfig(threshold=0.7, batch_size=32, ray_partitions=2)
    items = [_item(k, t) for k, t in enumerate(texts)]
    local = NearDedup(cfg)
    kept_local = [i.id for i in local([*items])]

    def no_collect(*a: Any, **kw: Any) -> None:
        raise AssertionError("the whole dataset was collected into the driver")

    for name in ("take_all", "to_pandas", "take", "iter_rows", "to_arrow_refs"):
        monkeypatch.setattr(ray.data.Dataset, name, no_collect)
    back: list[int] = []
    iter_batches = ray.data.Dataset.iter_batches

    def counting(self: Any, *a: Any, **kw: Any) -> Iterator[dict[str, np.ndarray]]:
        for b in iter_batches(self, *a, **kw):
            assert set(b) == {"i", "j"}  # ids only: no text, no signature
            back.append(len(b["i"]))
            yield b

    monkeypatch.setattr(ray.data.Dataset, "iter_batches", counting)
    on_ray = NearDedup(cfg.model_copy(update={"engine": "ray"}))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        kept_ray = [i.id for i in on_ray([*items])]
    finally:
        ray.shutdown()
    assert kept_ray == kept_local and on_ray.removed == local.removed and len(local.removed) >= 35
    # at most one edge per dropped id and band reaches the driver, however large a bucket
    assert 0 < sum(back) <= len(local.removed) * NearDedupIndex(cfg).bands
