"""Deduplication: exact (after normalisation) and near-duplicate (MinHash-LSH over word n-grams).

MinHash is computed for a whole batch of documents at once in numpy: word hashes (vectorised), n-gram
hashes by a rolling polynomial over the word-hash array, and the `num_perm` permutations as
multiply-shift hashes h(x) = (a*x + b) >> 32 on uint64, which wrap instead of needing the modulo
of the classic (a*x + b) mod p scheme. Signatures go through LSH banding (bands x rows chosen from
the threshold as datasketch does); candidate pairs in a bucket are kept when their signatures agree
on at least `threshold` of the permutations, and connected components keep their first member.

Every piece is a pure function of a batch (signatures, band keys) or of one bucket (pairs), so the
same step runs on Ray Data (`engine: ray`): batches are signed in parallel, buckets are formed by a
distributed group-by and verified where they lie, and only a spanning forest of each bucket's verified
pairs (at most one edge per dropped document and band) reaches the driver: no text, no signature.
Same seed -> same result, either way.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import chain
from typing import Any

import numpy as np

from aloe.curate.config import DedupConfig
from aloe.curate.items import Item, Step

# Words are runs of ASCII letters/digits/underscore or non-ASCII bytes, split in C by bytes.translate:
# ~4x faster than re.findall(r"\w+") and the same on English text.
_NON_WORD = bytes(b if chr(b).isalnum() or b == 95 or b >= 128 else 32 for b in range(256))
_ROLL = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit constant of the rolling n-gram hash
_MASK32 = np.uint64(0xFFFFFFFF)


# multi-byte spaces and punctuation that would otherwise glue words together ("10\u00a0km")
_UNICODE_SEPARATORS = [c.encode() for c in "\u00a0\u2009\u202f\u2018\u2019\u201c\u201d\u2013\u2014\u2026"]


def words(text: str) -> list[bytes]:
    b = text.lower().encode()
    if not b.isascii():
        for sep in _UNICODE_SEPARATORS:
            b = b.replace(sep, b" ")
    return b.translate(_NON_WORD).split()


def normalised_key(text: str) -> str:
    return hashlib.sha1(b" ".join(words(text))).hexdigest()


_LANES = np.array([0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0xD6E8FEB86659FD93], dtype=np.uint64)


def word_hashes(ws: list[bytes]) -> np.ndarray:
    """A stable 64-bit hash per word, vectorised: the word's first 32 bytes as four uint64 lanes,
    combined linearly and finished with murmur3's mixer. Unlike hash(), it is the same in every
    process (Ray workers included); words longer than 32 bytes hash on their first 32."""
    lanes = np.array(ws, dtype="S32").view(np.uint64).reshape(-1, 4) if ws else np.zeros((0, 4), np.uint64)
    with np.errstate(over="ignore"):
        h = (lanes * _LANES).sum(axis=1, dtype=np.uint64)
        h ^= h >> np.uint64(33)
        h *= np.uint64(0xFF51AFD7ED558CCD)
        h ^= h >> np.uint64(33)
    return h


@lru_cache(maxsize=64)
def optimal_bands(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows) minimising the false-positive + false-negative area, as datasketch does."""
    best, opt = float("inf"), (1, num_perm)
    xs_lo, xs_hi = np.linspace(0.0, threshold, 201), np.linspace(threshold, 1.0, 201)
    for b in range(1, num_perm + 1):
        for r in range(1, num_perm // b + 1):
            fp = np.trapezoid(1 - (1 - xs_lo ** r) ** b, xs_lo)
            fn = np.trapezoid(1 - (1 - (1 - xs_hi ** r) ** b), xs_hi)
            if 0.5 * fp + 0.5 * fn < best:
                best, opt = 0.5 * fp + 0.5 * fn, (b, r)
    return opt


@dataclass(frozen=True)
class MinHasher:
    num_perm: int = 128
    ngram: int = 3
    seed: int = 1

    @property
    def _params(self) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(self.seed)
        a = rng.integers(0, 2**63, size=self.num_perm, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
        b = rng.integers(0, 2**63, size=self.num_perm, dtype=np.uint64)
        return a, b

    def shingles(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """32-bit n-gram hashes of all texts, grouped by text, and each text's start offset.

        A text shorter than n words is one shingle of all its words; an empty text is shingle 0.
        """
        n = self.ngram
        toks = [words(t) for t in texts]
        lengths = np.fromiter((len(t) for t in toks), dtype=np.int64, count=len(toks))
        total = int(lengths.sum())
        flat = word_hashes(list(chain.from_iterable(toks)))
        doc_of = np.repeat(np.arange(len(texts)), lengths)
        with np.errstate(over="ignore"):
            acc = flat[: max(total - n + 1, 0)].copy()
            for k in range(1, n):
                acc = acc * _ROLL + flat[k: total - n + 1 + k]
        valid = np.flatnonzero(doc_of[: len(acc)] == doc_of[n - 1:]) if len(acc) else np.zeros(0, np.int64)
        hashes, owner = acc[valid], doc_of[valid]
        short = np.flatnonzero(lengths < n)
        if len(short):  # too short for one n-gram: hash what there is
            extra = np.zeros(len(short), dtype=np.uint64)
            starts = np.cumsum(lengths) - lengths
            with np.errstate(over="ignore"):
                for k, d in enumerate(short):
                    for w in flat[starts[d]: starts[d] + lengths[d]]:
                        extra[k] = extra[k] * _ROLL + w
            order = np.argsort(np.concatenate([owner, short]), kind="stable")
            hashes, owner = np.concatenate([hashes, extra])[order], np.concatenate([owner, short])[order]
        offsets = np.searchsorted(owner, np.arange(len(texts)))
        return (hashes >> np.uint64(32)) ^ (hashes & _MASK32), offsets

    def signatures(self, texts: Sequence[str], chunk: int = 1 << 12) -> np.ndarray:
        """(len(texts), num_perm) uint32 MinHash signatures."""
        a, b = self._params
        x, offsets = self.shingles(texts)
        sig = np.empty((len(texts), self.num_perm), dtype=np.uint32)
        if not len(texts):
            return sig
        # whole documents in chunks of ~`chunk` shingles bound the (perms x shingles) matrix; the
        # perms-major layout with in-place ops is ~5x faster than shingles-major in numpy
        bounds = np.append(offsets, len(x))
        d0 = 0
        while d0 < len(texts):
            d1 = max(int(np.searchsorted(bounds, bounds[d0] + chunk, side="right")) - 1, d0 + 1)
            lo, hi = bounds[d0], bounds[d1]
            with np.errstate(over="ignore"):
                h = np.multiply(a[:, None], x[None, lo:hi])
                h += b[:, None]
            h >>= np.uint64(32)
            sig[d0:d1] = np.minimum.reduceat(h, offsets[d0:d1] - lo, axis=1).T
            d0 = d1
        return sig


def band_keys(sig: np.ndarray, bands: int, rows: int, seed: int = 0) -> np.ndarray:
    """(n, bands) uint64 bucket keys: a random linear hash of each band's rows."""
    mult = np.random.default_rng(seed + 7919).integers(0, 2**63, size=(bands, rows), dtype=np.uint64) | np.uint64(1)
    s = sig[:, : bands * rows].astype(np.uint64).reshape(len(sig), bands, rows)
    with np.errstate(over="ignore"):
        return (s * mult[None]).sum(axis=2, dtype=np.uint64)


def bucket_pairs(idx: np.ndarray) -> np.ndarray:
    """(k, 2) int64 array of all pairs i < j among the documents of one bucket."""
    idx = np.sort(np.asarray(idx, dtype=np.int64))
    a, b = np.triu_indices(len(idx), 1)
    return np.stack([idx[a], idx[b]], axis=1)


def agreeing(pairs: np.ndarray, sig_i: np.ndarray, sig_j: np.ndarray, threshold: float) -> np.ndarray:
    """The pairs whose signatures agree on >= threshold of the permutations (estimated Jaccard)."""
    return pairs[(sig_i == sig_j).mean(axis=1) >= threshold]


def unique_pairs(chunks: list[np.ndarray]) -> np.ndarray:
    return np.unique(np.concatenate(chunks), axis=0) if chunks else np.zeros((0, 2), np.int64)


def candidate_pairs(keys: np.ndarray, sig: np.ndarray | None, threshold: float | None) -> np.ndarray:
    """Pairs sharing a bucket in any band; with `sig`, only those whose signatures agree."""
    chunks = []
    for band in range(keys.shape[1]):
        order = np.argsort(keys[:, band], kind="stable")
        k = keys[order, band]
        bounds = np.r_[0, np.flatnonzero(k[1:] != k[:-1]) + 1, len(k)]
        lens = np.diff(bounds)
        for start, length in zip(bounds[:-1][lens > 1], lens[lens > 1], strict=True):
            chunks.append(bucket_pairs(order[start:start + length]))
    pairs = unique_pairs(chunks)
    if sig is None or threshold is None:
        return pairs
    kept = [agreeing(pairs[s:s + 65536], sig[pairs[s:s + 65536, 0]], sig[pairs[s:s + 65536, 1]], threshold)
            for s in range(0, len(pairs), 65536)]
    return unique_pairs(kept)


def forest_edges(pairs: np.ndarray) -> np.ndarray:
    """(root, member) edges with the same connected components as `pairs`, one per non-root member.

    A bucket of k copies of one boilerplate text verifies k(k-1)/2 pairs; k-1 edges say the same."""
    if not len(pairs):
        return pairs
    nodes = np.unique(pairs)
    drop = duplicates_to_drop(len(nodes), np.searchsorted(nodes, pairs))
    return np.array([[nodes[root], nodes[i]] for i, root in drop.items()], dtype=np.int64)


def duplicates_to_drop(n: int, pairs: np.ndarray) -> dict[int, int]:
    """{dropped index: kept index}: each connected component keeps its smallest index."""
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, j in pairs.tolist():
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    return {i: find(i) for i in range(n) if find(i) != i}


class NearDedupIndex:
    """In-process MinHash-LSH over a list of texts; the benchmark and the step both use it."""

    def __init__(self, cfg: DedupConfig):
        self.cfg = cfg
        self.hasher = MinHasher(cfg.num_perm, cfg.ngram, cfg.seed)
        if cfg.bands:
            self.bands, self.rows = cfg.bands, cfg.num_perm // cfg.bands
        else:
            self.bands, self.rows = optimal_bands(cfg.threshold, cfg.num_perm)

    def pairs(self, texts: Sequence[str]) -> np.ndarray:
        """(k, 2) array of duplicate pairs i < j (candidates that passed verification, if on)."""
        step = self.cfg.batch_size
        sig = np.concatenate([self.hasher.signatures(texts[i:i + step]) for i in range(0, len(texts), step)]
                             or [np.zeros((0, self.cfg.num_perm), np.uint32)])
        keys = band_keys(sig, self.bands, self.rows, self.cfg.seed)
        return candidate_pairs(keys, sig if self.cfg.verify else None, self.cfg.threshold if self.cfg.verify else None)


def ray_dataset_pairs(ds: Any, cfg: DedupConfig, text: str = "text", idx: str = "idx") -> np.ndarray:
    """Duplicate edges of a Ray Dataset with a text column and an integer id column: not every
    verified pair, but edges with the same connected components, so `duplicates_to_drop` over them
    gives what it gives over NearDedupIndex.pairs.

    Signatures and band keys are computed per batch on the workers; buckets are formed by a
    distributed group-by on (band, key) and verified there; only each bucket's spanning forest of
    (i, j) ids comes back to the driver. So a corpus read lazily with `ray.data.read_json(...)`
    never has to fit in one process.
    """
    index = NearDedupIndex(cfg)
    hasher, bands, rows = index.hasher, index.bands, index.rows

    def sign(batch: dict[str, Any]) -> dict[str, Any]:
        sig = hasher.signatures(list(batch[text]))
        keys = band_keys(sig, bands, rows, cfg.seed)
        return {"band": np.repeat(np.arange(bands), len(sig)), "key": keys.T.reshape(-1),
                "idx": np.tile(np.asarray(batch[idx], dtype=np.int64), bands), "sig": np.tile(sig, (bands, 1))}

    def pairs_of_bucket(group: dict[str, Any]) -> dict[str, Any]:
        ids = np.asarray(group["idx"], dtype=np.int64)
        order = np.argsort(ids)
        pairs = bucket_pairs(ids)
        if cfg.verify and len(pairs):
            sig = np.stack(group["sig"])[order]
            a, b = np.triu_indices(len(ids), 1)
            pairs = agreeing(pairs, sig[a], sig[b], cfg.threshold)
        edges = forest_edges(pairs)
        return {"i": edges[:, 0], "j": edges[:, 1]}

    signed = ds.map_batches(sign, batch_size=cfg.batch_size, batch_format="numpy")
    edges = signed.groupby(["band", "key"], num_partitions=cfg.ray_partitions).map_groups(
        pairs_of_bucket, batch_format="numpy")
    chunks = [np.stack([b["i"], b["j"]], axis=1).astype(np.int64)
              for b in edges.iter_batches(batch_format="numpy", batch_size=65536) if len(b["i"])]
    return unique_pairs(chunks)


def ray_pairs(texts: Sequence[str], cfg: DedupConfig) -> np.ndarray:
    """Edges with the components of NearDedupIndex.pairs, on Ray Data (starts a local Ray if none)."""
    import ray

    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    return ray_dataset_pairs(ray.data.from_items([{"idx": i, "text": t} for i, t in enumerate(texts)]), cfg)


class ExactDedup(Step):
    name = "dedup_exact"

    def __init__(self) -> None:
        super().__init__()
        self.removed: list[dict[str, str]] = []

    def run(self, items: list[Item]) -> list[Item]:
        seen: dict[str, str] = {}
        out = []
        for item in items:
            key = normalised_key(item.text)
            if key in seen:
                self.stats.drop(item, "exact_duplicate")
                self.removed.append({"id": item.id, "source": item.source, "kept": seen[key]})
            else:
                seen[key] = item.id
                out.append(item)
        return out


class NearDedup(Step):
    name = "dedup_near"

    def __init__(self, cfg: DedupConfig):
        super().__init__()
        self.cfg = cfg
        self.removed: list[dict[str, str]] = []

    def run(self, items: list[Item]) -> list[Item]:
        texts = [i.text for i in items]
        pairs = ray_pairs(texts, self.cfg) if self.cfg.engine == "ray" else NearDedupIndex(self.cfg).pairs(texts)
        drop = duplicates_to_drop(len(items), pairs)
        for i, keep in sorted(drop.items()):
            self.stats.drop(items[i], "near_duplicate")
            self.removed.append({"id": items[i].id, "source": items[i].source, "kept": items[keep].id})
        return [it for k, it in enumerate(items) if k not in drop]
