"""RAG retrieval on the full shared corpus: recall@k of BM25, dense and fused, and query latency.

Questions with a known source passage: the 500 non-test PubMedQA (PQA-L) questions, whose own
abstracts are in the corpus as `pubmed:<pmid>:<chunk>` passages. A question counts as found at k
when any chunk of its abstract is among the top k. Only passage text is indexed: the corpus
titles of PubMed passages are these very questions (see aloe.infer.rag.retriever).

Indexes are built once under the index dir (the dense one takes a while on a CPU) and reused.

    nice -n 10 python benchmarks/rag_retrieval.py --data-dir /work/shared/data
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from aloe.infer.config import default_index_dir
from aloe.models.embeddings import DenseIndex
from aloe.infer.rag.retriever import METHODS, Retriever
from aloe.io import read_json, write_jsonl

KS = (1, 3, 5, 10, 20)


def evaluate(r: Retriever, qs: list[tuple[str, str]], methods: list[str], label: str, rrf_k: float,
             latency_queries: int) -> None:
    queries = [q for _, q in qs]
    print(f"\n{label}: {len(r.passages)} passages, {len(qs)} PubMedQA questions with their abstract in it")
    print(f"| method | {' | '.join(f'recall@{k}' for k in KS)} | MRR@20 | batch of {len(qs)} (ms/query) "
          f"| single query p50 / p95 (ms) |")
    print("|---|" + "---|" * (len(KS) + 3))
    for method in methods:
        r.search(queries[:2], 20, method)  # first-call overheads (tokenizer, model) out of the timing
        t0 = time.perf_counter()
        hits = r.search(queries, 20, method)
        batch_ms = (time.perf_counter() - t0) * 1000 / len(queries)
        ranks = []
        for (pmid, _), row in zip(qs, hits, strict=True):
            found = [i for i, h in enumerate(row, 1) if h.id.startswith(f"pubmed:{pmid}:")]
            ranks.append(found[0] if found else None)
        recall = [sum(1 for x in ranks if x is not None and x <= k) / len(ranks) for k in KS]
        mrr = sum(1 / x for x in ranks if x is not None) / len(ranks)
        single = []
        for q in queries[:latency_queries]:
            t0 = time.perf_counter()
            r.search([q], 5, method)
            single.append((time.perf_counter() - t0) * 1000)
        p95 = statistics.quantiles(single, n=20)[-1]
        print(f"| {method}{f' (rrf k={rrf_k:g})' if method == 'fused' else ''} | "
              f"{' | '.join(f'{x:.3f}' for x in recall)} | {mrr:.3f} | {batch_ms:.2f} | "
              f"{statistics.median(single):.1f} / {p95:.1f} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", type=Path, default=Path("/work/shared/data"))
    ap.add_argument("--index-dir", type=Path, default=default_index_dir())
    ap.add_argument("--rrf-k", type=float, default=60.0)
    ap.add_argument("--passage-max-tokens", type=int, default=64)
    ap.add_argument("--latency-queries", type=int, default=100)
    ap.add_argument("--build-dense", action="store_true",
                    help="embed the full corpus when its dense index is not built yet (long on a CPU)")
    ap.add_argument("--sub-corpus", type=int, default=0,
                    help="also evaluate all three methods on the first N MedQuAD passages plus all PubMed ones")
    args = ap.parse_args()

    corpus = args.data_dir / "rag_corpus" / "passages.jsonl"
    pqal = read_json(args.data_dir / "pubmedqa" / "ori_pqal.json")
    test = set(read_json(args.data_dir / "pubmedqa" / "test_ground_truth.json"))
    kw = {"rrf_k": args.rrf_k, "passage_max_tokens": args.passage_max_tokens}
    t0 = time.perf_counter()
    full = Retriever(corpus, args.index_dir, **kw)
    full.warm("bm25")
    methods = list(METHODS) if args.build_dense or DenseIndex.exists(full.dense_dir) else ["bm25"]
    full.warm(methods[-1])
    print(f"full-corpus indexes ({', '.join(methods)}) loaded or built in {time.perf_counter() - t0:.1f} s")
    pmids = sorted({p.id.split(":")[1] for p in full.passages if p.id.startswith("pubmed:")})
    qs = [(pmid, pqal[pmid]["QUESTION"]) for pmid in pmids if pmid in pqal and pmid not in test]
    evaluate(full, qs, methods, "full shared corpus", args.rrf_k, args.latency_queries)
    if methods == ["bm25"]:
        print("(dense and fused skipped on the full corpus: its dense index is not built; pass --build-dense)")

    if args.sub_corpus:
        sub_path = args.index_dir / f"subcorpus-pubmed+medquad{args.sub_corpus}.jsonl"
        medquad = [p for p in full.passages if not p.id.startswith("pubmed:")][: args.sub_corpus]
        # MedQuAD first, in corpus order: its embedding shards are then those of the full corpus.
        write_jsonl(sub_path, [p.to_dict() for p in medquad]
                    + [p.to_dict() for p in full.passages if p.id.startswith("pubmed:")])
        sub = Retriever(sub_path, args.index_dir, **kw)
        sub.warm("fused")
        evaluate(sub, qs, list(METHODS), f"sub-corpus (first {len(medquad)} MedQuAD + all PubMed passages)",
                 args.rrf_k, args.latency_queries)


if __name__ == "__main__":
    main()
