"""HFCausalLM.generate's continuous batching against transformers' own generate, on the tiny model."""

from __future__ import annotations

import pytest
import torch

from aloe.models.generator import GenParams

# shared prefixes (as the shuffled samples of one question have), and lengths far apart
PROMPTS = [
    "Question: which drug treats hypertension?\nA. aspirin\nB. lisinopril\nAnswer:",
    "Question: which drug treats hypertension?\nA. lisinopril\nB. aspirin\nAnswer:",
    "a",
    "The patient has a fever and a cough that started three days ago after a long trip abroad, and",
    "Question: which drug treats hypertension?\nA. aspirin\nB. lisinopril\nAnswer:",
    "Hello",
]


def reference(model, tok, prompt: str, max_new_tokens: int) -> str:
    ids = tok(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                         do_sample=False, pad_token_id=tok.pad_token_id)
    return tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


@pytest.mark.parametrize("batch_size", [1, 3, 8])
def test_greedy_equals_transformers_generate_per_prompt(tiny_lm, tiny_model, smollm_tokenizer, batch_size):
    tiny_lm.batch_size = batch_size
    finished: list[int] = []
    out = tiny_lm.generate(PROMPTS, GenParams(max_new_tokens=12), progress=False,
                           on_batch=lambda idx, texts: finished.extend(idx))
    assert out == [reference(tiny_model, smollm_tokenizer, p, 12) for p in PROMPTS]
    assert sorted(finished) == list(range(len(PROMPTS)))


def test_rows_stop_at_eos_while_others_go_on(tiny_lm, tiny_model, smollm_tokenizer):
    # declare one prompt's first greedy token an end token: that row must leave after one token
    eos = smollm_tokenizer.eos_token_id
    first = smollm_tokenizer(PROMPTS[3], add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        step1 = tiny_model(torch.tensor([first])).logits[0, -1].argmax().item()
    saved = tiny_model.generation_config.eos_token_id
    tiny_model.generation_config.eos_token_id = [eos, step1]
    try:
        out = tiny_lm.generate(PROMPTS, GenParams(max_new_tokens=10), progress=False)
        assert out[3] == reference(tiny_model, smollm_tokenizer, PROMPTS[3], 10)
        assert len(smollm_tokenizer(out[3], add_special_tokens=False)["input_ids"]) <= 1
        assert out == [reference(tiny_model, smollm_tokenizer, p, 10) for p in PROMPTS]
    finally:
        tiny_model.generation_config.eos_token_id = saved


def test_sampling_depends_only_on_prompt_and_seed(tiny_lm):
    p = GenParams(max_new_tokens=8, temperature=0.9, top_p=0.9, seed=7)
    tiny_lm.batch_size = 4
    together = tiny_lm.generate(PROMPTS, p, progress=False)
    tiny_lm.batch_size = 2
    reversed_ = tiny_lm.generate(PROMPTS[::-1], p, progress=False)[::-1]
    alone = [tiny_lm.generate([x], p, progress=False)[0] for x in PROMPTS]
    assert together == reversed_ == alone
    assert together[0] == together[4]  # same prompt, same seed: same sample
    other_seed = tiny_lm.generate(PROMPTS, GenParams(max_new_tokens=8, temperature=0.9, top_p=0.9, seed=8),
                                  progress=False)
    assert other_seed != together


def test_stop_strings_cut_the_text_and_end_the_row(tiny_lm, tiny_model, smollm_tokenizer):
    full = reference(tiny_model, smollm_tokenizer, PROMPTS[3], 12)
    stop = full.split()[1]
    out = tiny_lm.generate([PROMPTS[3]], GenParams(max_new_tokens=12, stop=[stop]), progress=False)[0]
    assert out == full[:full.find(stop)]
