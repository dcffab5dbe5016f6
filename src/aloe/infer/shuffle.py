"""Choice shuffling: show a question's options in a permuted order, map answers back.

A permutation is the list of original letters in the order they are shown: with
`order = ["C", "A", "B"]` the model sees C's text as option A, A's as B, and B's as C, so a
displayed answer "B" means original option "A".
"""

from __future__ import annotations

import itertools
import math
import random

from aloe.records import LETTERS, MCQ


def shown_options(q: MCQ, order: list[str]) -> dict[str, str]:
    return {LETTERS[i]: q.options[orig] for i, orig in enumerate(order)}


def to_original(order: list[str], shown_letter: str | None) -> str | None:
    if shown_letter is None:
        return None
    i = LETTERS.index(shown_letter)
    return order[i] if i < len(order) else None


def permutations(q: MCQ, n: int, seed: int) -> list[list[str]]:
    """n orders for a question, seeded by (seed, question id); distinct while n <= len(options)!.

    The first is a fresh random order too, so no sample is tied to the original layout. Distinct
    orders make every sample's prompt distinct, which also keeps their completion-cache keys apart.
    """
    letters = list(q.options)
    rng = random.Random(f"{seed}:shuffle:{q.id}")
    if math.factorial(len(letters)) <= max(n, 24):
        pool = [list(p) for p in itertools.permutations(letters)]
        rng.shuffle(pool)
        return [pool[i % len(pool)] for i in range(n)]
    seen: set[tuple[str, ...]] = set()
    out: list[list[str]] = []
    while len(out) < n:
        order = rng.sample(letters, len(letters))
        if tuple(order) not in seen:
            seen.add(tuple(order))
            out.append(order)
    return out
