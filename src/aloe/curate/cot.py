"""Synthetic chain-of-thought, verified against gold: the teacher sees the answer and must reach it.

The teacher (any model spec: transformers, vLLM, OpenAI-compatible HTTP) gets the question, the
options, the gold answer and the reference explanation when there is one, and writes a rephrasing,
an analysis of each option, a summary and `Answer: X`. A chain counts only when the letter read
from it equals gold; otherwise the item is asked again at the next (higher) temperature and a new
seed, which is also a new cache key, up to `tries` times; items that never match are dropped and
counted (a chain shorter than `min_chain_words` counts as no chain). Every completion goes through
the on-disk completion cache as it arrives, so a rerun after a crash asks only for what was never
answered.

A teacher request that fails (after the backend's own retries) leaves its item without an answer,
while the items answered beside it go on. At the end, `on_teacher_error: fail` (the default) raises
`CotFailed` with the count of items left, so the stage is not marked done and a rerun pays only for
what is missing; `continue` drops those items and counts them. Fewer verified chains than
`min_verified` fails either way. `verified` holds the chains verified so far even when the step fails.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from pathlib import Path
from typing import Any

from aloe.curate.config import CotConfig
from aloe.curate.items import Item, Step
from aloe.curate.templates import format_options
from aloe.mcq.answers import extract_answer
from aloe.models.completion_cache import CachedGenerator
from aloe.models.generator import GenParams, Generator, Messages
from aloe.records import MCQ

log = logging.getLogger(__name__)


class CotFailed(RuntimeError):
    """The CoT step fell short of the recipe's policy (`cot.on_teacher_error`, `cot.min_verified`)."""


SYSTEM = "You are an expert physician who writes clear worked solutions for medical exam questions."


def teacher_prompt(m: MCQ) -> Messages:
    parts = [f"Context:\n{m.context}\n"] if m.context else []
    parts += [f"Question: {m.question}", f"Options:\n{format_options(m)}",
              f"\nThe correct answer is {m.answer}. {m.options[m.answer]}"]
    if m.explanation:
        parts.append(f"Reference explanation: {m.explanation}")
    parts.append(
        "\nWrite a worked solution that reaches this answer:\n"
        "1. Rephrase the question in your own words.\n"
        "2. Analyse each option in turn, saying why it is right or wrong.\n"
        "3. Summarise the key reasoning.\n"
        f"4. End with a final line of the form 'Answer: {m.answer}'.")
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "\n".join(parts)}]


def verified_chain(text: str, m: MCQ, min_words: int = 0) -> str | None:
    """The chain if its final answer is gold (with a closing 'Answer: X' line ensured), else None.

    A bare restatement of the answer given in the prompt is not a chain: fewer than `min_words`
    words fails too.
    """
    if extract_answer(text, m.options) != m.answer or len(text.split()) < min_words:
        return None
    chain = text.strip()
    if not chain.rstrip(".* ").endswith(f"Answer: {m.answer}"):
        chain += f"\n\nAnswer: {m.answer}"
    return chain


def teacher_generator(cfg: CotConfig, cache_dir: Path) -> Generator:
    from aloe.models.backends import get_generator
    from aloe.models.spec import parse_model_spec

    kind = parse_model_spec(cfg.teacher).kind
    kwargs: dict[str, Any] = (
        {"max_concurrency": cfg.concurrency, "timeout": cfg.timeout, "max_retries": cfg.max_retries,
         "backoff": cfg.backoff} if kind == "openai" else {} if kind == "vllm" else {"batch_size": cfg.batch_size})
    return get_generator(cfg.teacher, cache_dir=str(cache_dir), **kwargs)


class SynthesiseCoT(Step):
    name = "cot"

    def __init__(self, cfg: CotConfig, cache_dir: Path, generator: Generator | None = None):
        super().__init__()
        self.cfg, self.cache_dir = cfg, cache_dir
        self._generator = generator
        self.summary: dict[str, Any] = {}
        self.verified: list[Item] = []

    def select(self, items: list[Item]) -> list[Item]:
        pool = [i for i in items if i.mcq is not None and i.cot]
        chosen = random.Random(self.cfg.seed).sample(range(len(pool)), min(self.cfg.max_items, len(pool)))
        return [pool[k] for k in sorted(chosen)]

    @staticmethod
    def _ask(gen: Generator, pending: list[Item], params: GenParams) -> tuple[dict[int, str], str | None]:
        """The teacher's completions by position in `pending`, and its error when some got none."""
        answered: dict[int, str] = {}
        try:
            texts = gen.chat([teacher_prompt(i.mcq) for i in pending], params,  # type: ignore[arg-type]
                             on_done=lambda idx, got: answered.update(zip(idx, got, strict=True)))
        except Exception as e:  # noqa: BLE001 - what was answered beside the failures is kept
            return answered, f"{type(e).__name__}: {e}"
        return dict(enumerate(texts)), None

    def run(self, items: list[Item]) -> list[Item]:
        chosen = self.select(items) if self.cfg.enabled else []
        policy = {"on_teacher_error": self.cfg.on_teacher_error, "min_verified": self.cfg.min_verified}
        if not chosen:
            self.summary = {**policy, "attempted": 0, "verified": 0}
            self._check_min_verified("cot is disabled" if not self.cfg.enabled
                                     else "no MCQ of a `cot: true` source reached this step")
            return items
        gen = self._generator or teacher_generator(self.cfg, self.cache_dir)
        pending, chains, tries_used = list(chosen), {}, Counter()
        failed: set[str] = set()
        errors: list[str] = []
        requests = 0
        for t in range(self.cfg.tries):
            temp = self.cfg.temperatures[min(t, len(self.cfg.temperatures) - 1)]
            params = GenParams(max_new_tokens=self.cfg.max_new_tokens, temperature=temp, seed=self.cfg.seed + t)
            requests += len(pending)
            answered, error = self._ask(gen, pending, params)
            if error:
                errors.append(error)
                log.error("teacher failed on try %d for %d of %d items: %s", t + 1, len(pending) - len(answered),
                          len(pending), error)
            still = []
            for k, item in enumerate(pending):
                if k not in answered:
                    failed.add(item.id)
                    continue
                chain = verified_chain(answered[k], item.mcq, self.cfg.min_chain_words)  # type: ignore[arg-type]
                if chain is None:
                    still.append(item)
                else:
                    chains[item.id] = (chain, t + 1)
                    tries_used[t + 1] += 1
            log.info("cot try %d (temperature %.2f): %d verified, %d unanswered, %d left", t + 1, temp,
                     tries_used[t + 1], len(pending) - len(answered), len(still))
            pending = still
            if not pending:
                break
        self.verified = [self._cot_item(item, *chains[item.id], gen.name) for item in chosen if item.id in chains]
        self.summary = {"teacher": gen.name, **policy, "attempted": len(chosen), "requests": requests,
                        "answered": requests - len(failed), "failed": len(failed), "verified": len(chains),
                        "verified_at_try": {str(k): v for k, v in sorted(tries_used.items())},
                        "never_matched": len(chosen) - len(chains) - len(failed),
                        "error": errors[0] if errors else None,
                        "cache_hits": getattr(gen, "hits", None), "cache_misses": getattr(gen, "misses", None)}
        if failed and self.cfg.on_teacher_error == "fail":
            cached = " and cached" if isinstance(gen, CachedGenerator) else ""
            raise CotFailed(f"teacher {gen.name}: {len(failed)} of {requests} requests failed ({errors[0]}); "
                            f"{requests - len(failed)} answered{cached}, {len(chains)} chains verified; "
                            f"{len(failed)} of {len(chosen)} items left: rerun to resume "
                            f"(or set cot.on_teacher_error: continue to drop them)")
        self._check_min_verified(f"{len(chosen)} MCQs sent to {gen.name}: {self.summary['never_matched']} never "
                                 f"matched gold, {len(failed)} got no answer")
        for item in chosen:
            self.stats.added[item.source] += 1
            if item.id not in chains:
                self.stats.drop(item, "cot_teacher_error" if item.id in failed else "cot_never_matched_gold")
        return [*items, *self.verified]

    def _check_min_verified(self, why: str) -> None:
        if self.summary["verified"] < self.cfg.min_verified:
            raise CotFailed(f"cot: {self.summary['verified']} chains verified, fewer than cot.min_verified "
                            f"{self.cfg.min_verified} ({why})")

    @staticmethod
    def _cot_item(item: Item, chain: str, tries: int, teacher: str) -> Item:
        m = item.mcq
        assert m is not None
        return Item(id=f"{item.id}-cot", source=item.source, group="cot",
                    mcq=MCQ(**{k: getattr(m, k) for k in MCQ.__slots__}),
                    meta={"cot_chain": chain, "cot_tries": tries, "teacher": teacher})
