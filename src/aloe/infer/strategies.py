"""The inference strategies, one registry of presets over shared parts.

A strategy is a choice of parts (chain of thought, kNN shots, self-consistency, choice shuffling,
retrieved passages) and the knob values in `InferConfig`:

    zero-shot       direct letter answer, greedy
    cot             chain of thought, greedy
    sc-cot          chain of thought, n samples at temperature T, majority vote
    medprompt       kNN shots + chain of thought + n samples, each with shuffled options, vote
    rag             chain of thought over the top-k retrieved passages, greedy
    medprompt+rag   medprompt with the retrieved passages in every sample

Medprompt's kNN worked examples are the pool's own explanations, or (`shots_from: self-cot`) the
chains of thought the model itself wrote and verified on the pool (`aloe infer build-cot-db`).

Every strategy retries unparsable samples with the rising `retry_temperatures`, and sends all
samples of all questions to the generator in one batched call per round.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from aloe.mcq.answers import extract_answer
from aloe.mcq.prompts import cot_messages, question_block
from aloe.infer.config import InferConfig
from aloe.infer.cot_db import load_examples, model_identity
from aloe.infer.knn import nearest_shots
from aloe.infer.rag.retriever import Retriever
from aloe.infer.sampling import Sample, majority, run_rounds
from aloe.infer.shuffle import permutations, shown_options, to_original
from aloe.models.generator import GenParams, Generator, Messages
from aloe.records import MCQ, Passage

DIRECT_INSTRUCTION = (
    "Answer the following multiple-choice question about medicine. Reply with the letter of the "
    "correct option only, in the form 'Answer: X'."
)
RAG_INSTRUCTION = (
    "Passages that may help are given before the question, each with its id in square brackets; "
    "cite the ids of the passages you rely on, e.g. [pubmed:123:0]."
)


@dataclass(frozen=True)
class Preset:
    cot: bool = True
    knn: bool = False
    self_consistency: bool = False
    shuffle: bool = False
    rag: bool = False


STRATEGIES: dict[str, Preset] = {
    "zero-shot": Preset(cot=False),
    "cot": Preset(),
    "sc-cot": Preset(self_consistency=True),
    "medprompt": Preset(knn=True, self_consistency=True, shuffle=True),
    "rag": Preset(rag=True),
    "medprompt+rag": Preset(knn=True, self_consistency=True, shuffle=True, rag=True),
}


@dataclass
class StrategyResult:
    """One question's outcome; letters are the question's original letters, never shuffled ones."""

    id: str
    letter: str | None
    votes: dict[str, int]
    responses: list[list[str]]          # per sample: its response, then each retry's
    orders: list[list[str]]             # per sample: the original letters in the order shown
    shot_ids: list[str] = field(default_factory=list)
    passage_ids: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "letter": self.letter, "votes": self.votes, "responses": self.responses,
                "orders": self.orders, "shot_ids": self.shot_ids, "passage_ids": self.passage_ids}


def passages_block(passages: Sequence[Passage], max_chars: int) -> str:
    lines = ["Passages:"]
    for p in passages:
        text = p.text if len(p.text) <= max_chars else p.text[:max_chars].rsplit(" ", 1)[0] + " ..."
        head = f"[{p.id}] {p.title}: " if p.title else f"[{p.id}] "
        lines.append(head + text.replace("\n", " "))
    return "\n".join(lines)


class Strategy:
    def __init__(self, name: str, preset: Preset, config: InferConfig):
        self.name, self.preset, self.config = name, preset, config

    @property
    def uses_pool(self) -> bool:
        return self.preset.knn and self.config.k_shots > 0

    @cached_property
    def retriever(self) -> Retriever:
        r = Retriever.from_config(self.config)
        r.warm(self.config.rag.retriever)
        return r

    def _params(self) -> GenParams:
        c = self.config
        if not self.preset.cot:
            return GenParams(max_new_tokens=c.direct_max_new_tokens, temperature=0.0, seed=c.seed)
        temp = c.temperature if self.preset.self_consistency else 0.0
        return GenParams(max_new_tokens=c.max_new_tokens, temperature=temp, seed=c.seed)

    def _messages(self, q: MCQ, options: Mapping[str, str], shots: Sequence[MCQ],
                  passages: Sequence[Passage]) -> Messages:
        if self.preset.cot:
            msgs = cot_messages(q, shots, options)
        else:
            msgs = [{"role": "system", "content": DIRECT_INSTRUCTION},
                    {"role": "user", "content": question_block(q, options)}]
        if passages:
            msgs[0] = {"role": "system", "content": f"{msgs[0]['content']} {RAG_INSTRUCTION}"}
            block = passages_block(passages, self.config.rag.passage_chars)
            msgs[-1] = {"role": "user", "content": f"{block}\n\n{msgs[-1]['content']}"}
        return msgs

    def retrieve(self, questions: Sequence[MCQ]) -> list[list[Passage]]:
        if not self.preset.rag:
            return [[] for _ in questions]
        rc = self.config.rag
        queries = [" ".join([q.question, *q.options.values()]) for q in questions]
        hits = self.retriever.search(queries, rc.top_k, rc.retriever)
        return [[self.retriever.by_id[h.id] for h in row] for row in hits]

    def examples(self, generator: Generator, pool: Sequence[MCQ]) -> Sequence[MCQ]:
        """What kNN draws worked examples from: the pool with its own explanations, or (self-cot) the
        model's verified chains of thought on it, each with the options as the model saw them."""
        c = self.config
        if c.shots_from == "explanations":
            return pool
        assert c.cot_db is not None  # InferConfig requires it for self-cot
        return load_examples(c.cot_db, pool, model_identity(generator), c.k_shots)

    def predict(self, generator: Generator, questions: Sequence[MCQ], pool: Sequence[MCQ] = (),
                progress: bool = True) -> list[StrategyResult]:
        """Answer each question; `pool` holds the solved examples kNN few-shot draws from."""
        c = self.config
        if self.uses_pool:
            if not pool:
                raise ValueError(f"strategy {self.name} needs a few-shot pool (kNN examples); none given")
            shots = nearest_shots(questions, self.examples(generator, pool), c.k_shots, c.embedding_model,
                                  c.index_dir)
        else:
            shots = [[] for _ in questions]
        passages = self.retrieve(questions)
        n = c.n_samples if self.preset.self_consistency else 1
        samples: list[Sample] = []
        orders: list[list[list[str]]] = []
        for qi, q in enumerate(questions):
            q_orders = permutations(q, n, c.seed) if self.preset.shuffle else [list(q.options)] * n
            orders.append(q_orders)
            for order in q_orders:
                shown = shown_options(q, order)
                samples.append(Sample(qi, self._messages(q, shown, shots[qi], passages[qi]),
                                      read=_reader(shown, order)))
        run_rounds(generator, samples, self._params(), c.retry_temperatures, progress=progress)
        per_question: list[list[Sample]] = [[] for _ in questions]
        for s in samples:
            per_question[s.question].append(s)
        results = []
        for qi, (q, mine) in enumerate(zip(questions, per_question, strict=True)):
            letter, votes = majority([s.letter for s in mine])
            results.append(StrategyResult(q.id, letter, votes, [s.responses for s in mine], orders[qi],
                                          [s.id for s in shots[qi]], [p.id for p in passages[qi]]))
        return results


def _reader(shown: dict[str, str], order: list[str]):  # noqa: ANN202 - Callable[[str], str | None]
    return lambda text: to_original(order, extract_answer(text, shown))


def build_strategy(name: str, config: InferConfig | Mapping[str, Any] | None = None) -> Strategy:
    """The named strategy with the given knobs (an InferConfig, a dict of its fields, or defaults)."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; known: {', '.join(STRATEGIES)}")
    if config is None:
        config = InferConfig()
    elif not isinstance(config, InferConfig):
        config = InferConfig.model_validate(dict(config))
    return Strategy(name, STRATEGIES[name], config)
