"""Near-dedup quality and speed: aloe's numpy MinHash-LSH against datasketch.MinHashLSH.

The labelled set is built from real MedQuAD answers: mutually distinct base answers (exact 3-gram
Jaccard < 0.3 with every other base), plus edited copies of some of them (adjacent word swaps,
deletions and span moves at a known rate drawn per copy from 0-30%). The truth is every pair whose
exact Jaccard over word 3-gram sets is >= the threshold, computed for all pairs with a sparse
product. Both systems get the same texts, the same tokenisation, num_perm and threshold (so the
same bands x rows); each is timed end to end, text in -> duplicate pairs out, over `--seeds` hash seeds.

    nice -n 10 python benchmarks/dedup_vs_datasketch.py [--data-dir ../shared/data] [--bases 2000]
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
from scipy import sparse

from aloe.curate.config import DedupConfig
from aloe.curate.dedup import NearDedupIndex, words
from aloe.curate.sources import PACKAGED_DATA


def shingle_sets(texts: list[str], n: int) -> list[set[bytes]]:
    out = []
    for t in texts:
        w = words(t)
        out.append({b" ".join(w[k:k + n]) for k in range(max(len(w) - n + 1, 1))})
    return out


def exact_jaccard(sets: list[set[bytes]]) -> np.ndarray:
    vocab: dict[bytes, int] = {}
    rows, cols = [], []
    for i, s in enumerate(sets):
        for sh in s:
            rows.append(i)
            cols.append(vocab.setdefault(sh, len(vocab)))
    x = sparse.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(len(sets), len(vocab)))
    inter = (x @ x.T).toarray()
    size = np.asarray(x.sum(axis=1)).ravel()
    return inter / np.maximum(size[:, None] + size[None, :] - inter, 1)


def edit(text: str, rate: float, rng: random.Random) -> str:
    w = text.split()
    for _ in range(max(1, round(rate * len(w)))):
        op = rng.random()
        if len(w) < 4:
            break
        k = rng.randrange(len(w) - 1)
        if op < 0.4:
            w[k], w[k + 1] = w[k + 1], w[k]
        elif op < 0.8:
            del w[k]
        else:  # move a short span elsewhere
            span = w[k:k + 3]
            del w[k:k + 3]
            at = rng.randrange(len(w) + 1)
            w[at:at] = span
    return " ".join(w)


def build(data_dir: Path, n_bases: int, n_copies: int, ngram: int, seed: int) -> list[str]:
    path = data_dir / "medquad" / "medquad_answered.jsonl"
    answers = list(dict.fromkeys(json.loads(line)["answer"] for line in path.open(encoding="utf-8")))
    rng = random.Random(seed)
    rng.shuffle(answers)
    pool = answers[: n_bases * 3]
    jac = exact_jaccard(shingle_sets(pool, ngram))
    bases: list[int] = []
    for i in range(len(pool)):
        if all(jac[i, j] < 0.3 for j in bases):
            bases.append(i)
        if len(bases) == n_bases:
            break
    texts = [pool[i] for i in bases]
    texts += [edit(texts[rng.randrange(len(texts))], rng.uniform(0.0, 0.3), rng) for _ in range(n_copies)]
    rng.shuffle(texts)
    return texts


def prf(pred: set[tuple[int, int]], truth: set[tuple[int, int]]) -> tuple[float, float, float]:
    tp = len(pred & truth)
    p = tp / len(pred) if pred else 1.0
    r = tp / len(truth) if truth else 1.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def run_datasketch(texts: list[str], num_perm: int, threshold: float, ngram: int, seed: int) -> set[tuple[int, int]]:
    from datasketch import MinHash, MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    sketches = []
    for i, s in enumerate(shingle_sets(texts, ngram)):
        m = MinHash(num_perm=num_perm, seed=seed)
        m.update_batch(list(s))
        lsh.insert(i, m)
        sketches.append(m)
    pairs = set()
    for i, m in enumerate(sketches):
        pairs.update((min(i, j), max(i, j)) for j in lsh.query(m) if j != i)
    return pairs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, default=Path("/work/shared/data"))
    ap.add_argument("--bases", type=int, default=2000)
    ap.add_argument("--copies", type=int, default=1500)
    ap.add_argument("--num-perm", type=int, default=128)
    ap.add_argument("--threshold", type=float, default=0.7)
    ap.add_argument("--ngram", type=int, default=3)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1, help="seed of the data set construction")
    args = ap.parse_args()
    data_dir = args.data_dir if (args.data_dir / "medquad").is_dir() else PACKAGED_DATA

    texts = build(data_dir, args.bases, args.copies, args.ngram, args.seed)
    jac = exact_jaccard(shingle_sets(texts, args.ngram))
    iu = np.triu_indices(len(texts), 1)
    hit = jac[iu] >= args.threshold
    truth = set(zip(iu[0][hit].tolist(), iu[1][hit].tolist(), strict=True))
    print(f"data: {len(texts)} MedQuAD answers from {data_dir} ({args.bases} distinct bases, {args.copies} edited "
          f"copies), {len(truth)} true pairs with 3-gram Jaccard >= {args.threshold}; "
          f"mean {np.mean([len(t.split()) for t in texts]):.0f} words/doc")

    cfg = DedupConfig(num_perm=args.num_perm, threshold=args.threshold, ngram=args.ngram)
    index = NearDedupIndex(cfg)
    print(f"LSH: num_perm {args.num_perm}, threshold {args.threshold} -> {index.bands} bands x {index.rows} rows; "
          f"hash seeds {list(range(1, args.seeds + 1))} (F1 is the mean over seeds, speed the total)")
    systems = {
        "datasketch.MinHashLSH": lambda seed: run_datasketch(texts, args.num_perm, args.threshold, args.ngram, seed),
        "aloe (verify on)": lambda seed: {tuple(p) for p in NearDedupIndex(cfg.model_copy(update={"seed": seed}))
                                          .pairs(texts).tolist()},
        "aloe (verify off)": lambda seed: {tuple(p) for p in NearDedupIndex(
            cfg.model_copy(update={"seed": seed, "verify": False})).pairs(texts).tolist()},
    }
    results = {}
    for name, fn in systems.items():
        secs, scores = 0.0, []
        for seed in range(1, args.seeds + 1):
            t = time.perf_counter()
            pairs = fn(seed)
            secs += time.perf_counter() - t
            scores.append(prf(pairs, truth))  # type: ignore[arg-type]
        p, r, f1 = np.mean(scores, axis=0)
        results[name] = (len(texts) * args.seeds / secs, f1)
        print(f"{name:24s} {results[name][0]:9.0f} docs/s   P {p:.3f}  R {r:.3f}  F1 {f1:.3f}  ({secs:.2f} s)")
    (ds_speed, ds_f1), (speed, f1) = results["datasketch.MinHashLSH"], results["aloe (verify on)"]
    print(f"speed ratio aloe/datasketch: {speed / ds_speed:.1f}x   F1 aloe {f1:.3f} vs datasketch {ds_f1:.3f}")


if __name__ == "__main__":
    main()
