"""Self-consistency: many samples per question, generated in batched rounds, majority vote.

Each round sends every pending sample of every question to `generator.chat` in one call; samples
whose answer cannot be read go to the next round at a higher temperature. Identical conversations
are never sent twice in one call: they are split into waves with distinct seeds, because the
completion cache keys on (model, messages, params) and would otherwise hand one cached text to
every copy on a rerun, silently collapsing the vote.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from tqdm.auto import tqdm

from aloe.models.generator import GenParams, Generator, Messages


@dataclass
class Sample:
    """One requested completion: its conversation and how to read a letter out of the response."""

    question: int
    messages: Messages
    read: Callable[[str], str | None]
    responses: list[str] = field(default_factory=list)
    letter: str | None = None


def run_rounds(generator: Generator, samples: Sequence[Sample], params: GenParams,
               retry_temperatures: Sequence[float], progress: bool = True) -> None:
    """Fill each sample's responses and letter; at most 1 + len(retry_temperatures) rounds."""
    temperatures = [params.temperature, *retry_temperatures]
    pending = list(samples)
    for rnd, temp in enumerate(temperatures):
        if not pending:
            break
        for wave, batch in enumerate(_waves(pending)):
            p = replace(params, temperature=temp, seed=params.seed + 1000 * rnd + wave)
            bar = tqdm(total=len(batch), desc=f"round {rnd + 1} (T={temp:g})", disable=not progress, leave=False)
            texts = generator.chat([s.messages for s in batch], p,
                                   on_done=lambda idx, _t: bar.update(len(idx)))
            bar.close()
            for s, text in zip(batch, texts, strict=True):
                s.responses.append(text)
                s.letter = s.read(text)
        pending = [s for s in pending if s.letter is None]


def _waves(samples: Sequence[Sample]) -> list[list[Sample]]:
    seen: Counter[str] = Counter()
    waves: list[list[Sample]] = []
    for s in samples:
        key = json.dumps(s.messages, sort_keys=True)
        w = seen[key]
        seen[key] += 1
        if w == len(waves):
            waves.append([])
        waves[w].append(s)
    return waves


def majority(letters: Sequence[str | None]) -> tuple[str | None, dict[str, int]]:
    """The most voted letter (ties: the one voted first) and the per-letter counts."""
    votes = Counter(x for x in letters if x is not None)
    if not votes:
        return None, {}
    return votes.most_common(1)[0][0], dict(sorted(votes.items()))
