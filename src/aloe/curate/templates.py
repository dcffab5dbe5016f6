"""Prompt-template diversification: several phrasings per task type, one drawn per item.

The draw is seeded by (seed, item id), so it does not depend on item order or on which other items
survived earlier steps. Task types: MCQ (answer only, or answer with the reference explanation),
MCQ with chain-of-thought (the verified teacher chain as the response), open QA, dialogue, and
summarisation (a PubMedQA abstract -> its conclusion, added beside the MCQ).
"""

from __future__ import annotations

import random

from aloe.curate.config import TemplatesConfig
from aloe.curate.items import Item, Step
from aloe.records import MCQ

MCQ_PROMPTS = [
    "{question}\n\n{options}",
    "Answer the following multiple-choice question.\n\n{question}\n\n{options}",
    "Question: {question}\nOptions:\n{options}\nChoose the single best option.",
    "Here is a medical exam question. Pick the correct option.\n\n{question}\n{options}",
    "{context}{question}\n\nWhich option is correct?\n{options}",
]
MCQ_COT_PROMPTS = [
    "{question}\n\n{options}\n\nThink step by step, then give the final answer as 'Answer: X'.",
    "Solve this medical question. Reason through each option before answering.\n\n{question}\n{options}",
    "Question: {question}\nOptions:\n{options}\nExplain your reasoning, analyse every option, and end with 'Answer: X'.",
]
MCQ_ANSWERS = [
    "Answer: {letter}",
    "The correct answer is ({letter}) {text}.",
    "{letter}. {text}",
]
MCQ_EXPLAINED = [
    "{explanation}\n\nAnswer: {letter}",
    "The correct answer is ({letter}) {text}.\n\nExplanation: {explanation}",
]
OPEN_QA_PROMPTS = [
    "{question}",
    "Answer this medical question clearly and accurately: {question}",
    "Question: {question}\nPlease give a helpful, factual answer.",
    "A patient asks: \"{question}\" How would you answer?",
]
DIALOGUE_SYSTEMS = [
    None,
    "You are a careful, friendly physician talking with a patient.",
    "You are a medical assistant. Answer the patient's concerns responsibly and suggest seeing a doctor when needed.",
]
SUMMARY_PROMPTS = [
    "Summarise the main conclusion of this abstract.\n\n{context}",
    "Read the following study abstract and state its conclusion in a few sentences.\n\n{context}",
    "{context}\n\nWhat do the authors conclude?",
]


def format_options(m: MCQ) -> str:
    return "\n".join(f"{k}. {v}" for k, v in m.options.items())


class Templates(Step):
    name = "templates"

    def __init__(self, cfg: TemplatesConfig):
        super().__init__()
        self.cfg = cfg

    def _rng(self, item: Item) -> random.Random:
        return random.Random(f"{self.cfg.seed}:{item.id}")

    def _mcq(self, item: Item, rng: random.Random) -> list[dict[str, str]]:
        m = item.mcq
        assert m is not None
        chain = item.meta.get("cot_chain")
        fields = {"question": m.question, "options": format_options(m), "letter": m.answer,
                  "text": m.options[m.answer], "explanation": m.explanation or "",
                  "context": f"{m.context}\n\n" if m.context else ""}
        if chain:
            k = rng.randrange(len(MCQ_COT_PROMPTS))
            prompt, response, tpl = MCQ_COT_PROMPTS[k].format(**fields), chain, f"mcq_cot/{k}"
        else:
            # a prompt without {context} would hide the abstract a PubMedQA question is about
            choices = range(len(MCQ_PROMPTS)) if not m.context else [len(MCQ_PROMPTS) - 1]
            k = rng.choice(list(choices))
            answers = MCQ_EXPLAINED if m.explanation else MCQ_ANSWERS
            j = rng.randrange(len(answers))
            prompt, response = MCQ_PROMPTS[k].format(**fields), answers[j].format(**fields)
            tpl = f"mcq/{k}/{'explained' if m.explanation else 'answer'}{j}"
        item.meta["template"] = tpl
        return [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]

    def _chat(self, item: Item, rng: random.Random) -> None:
        msgs = item.messages or []
        turns = [m for m in msgs if m["role"] != "system"]
        if len(turns) == 2 and turns[0]["role"] == "user" and item.group == "medical":
            k = rng.randrange(len(OPEN_QA_PROMPTS))
            system = [m for m in msgs if m["role"] == "system"]
            # a source's constant system prompt is replaced by one of several, or none
            s = rng.randrange(len(DIALOGUE_SYSTEMS))
            new_system = [{"role": "system", "content": DIALOGUE_SYSTEMS[s]}] if system and DIALOGUE_SYSTEMS[s] else []
            item.messages = new_system + [
                {"role": "user", "content": OPEN_QA_PROMPTS[k].format(question=turns[0]["content"])}, turns[1]]
            item.meta["template"] = f"open_qa/{k}/system{s if new_system else '-'}"
        else:
            item.meta["template"] = "dialogue/as-is"

    def _summary(self, item: Item, rng: random.Random) -> Item | None:
        m = item.mcq
        if m is None or not m.context or not m.explanation or item.meta.get("cot_chain"):
            return None
        k = rng.randrange(len(SUMMARY_PROMPTS))
        return Item(id=f"{item.id}-summary", source=item.source, group=item.group,
                    messages=[{"role": "user", "content": SUMMARY_PROMPTS[k].format(context=m.context)},
                              {"role": "assistant", "content": m.explanation}],
                    meta={"task": "summarisation", "template": f"summary/{k}"})

    def run(self, items: list[Item]) -> list[Item]:
        out = []
        for item in items:
            rng = self._rng(item)
            if item.mcq is not None:
                summary = self._summary(item, rng)
                msgs = self._mcq(item, rng)
                item.meta["task"] = "mcq_cot" if item.meta.get("cot_chain") else "mcq"
                item.meta["answer"] = item.mcq.answer
                item.messages, item.mcq = msgs, None
                out.append(item)
                if summary:
                    self.stats.added[item.source] += 1
                    out.append(summary)
            else:
                self._chat(item, rng)
                item.meta.setdefault("task", "open_qa" if item.meta["template"].startswith("open_qa") else "dialogue")
                out.append(item)
            self.stats.change(item, "templated")
        return out
