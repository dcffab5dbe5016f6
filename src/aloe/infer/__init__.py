"""Medprompt-style inference: kNN few-shot, self-consistency with choice shuffling, and RAG.

`build_strategy(name, config)` gives a `Strategy` whose `predict(generator, questions, pool)`
answers MCQs with any `aloe.models.generator.Generator`; `aloe eval --strategy` and `aloe serve`
use it, and `aloe infer` runs it alone.
"""
