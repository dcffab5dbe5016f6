"""Shared fixtures: a tiny random Llama with the real SmolLM2 tokenizer, for fast unit tests."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

pytest_plugins = ["headless_chromium"]  # the `browser` fixture

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("ALOE_RESULT_CACHE", "off")  # tests sharing a checkpoint fixture would reuse each other's stages

# The full public data sets, beside the repository on this project's machines and in CI; a fresh
# clone has only the slices packaged with aloe.
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data for tests that need the full public data: skipped where it is absent, except
    in CI, which always has it, so that a lost folder cannot turn those tests into silent skips."""
    if not SHARED_DATA.is_dir():
        reason = f"needs the full public data in {SHARED_DATA} (absent: a fresh clone has only the packaged slices)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; CI must provide it", pytrace=False)
        pytest.skip(reason)
    return SHARED_DATA


@pytest.fixture(scope="session")
def smollm_tokenizer():
    from transformers import AutoTokenizer

    from aloe.models.embedded import cache_root, gguf_path

    # Reading the tokenizer out of the GGUF parses the whole file; keep a copy for later sessions.
    saved = cache_root() / "test-tokenizers" / "smollm2-135m-instruct"
    if (saved / "tokenizer.json").is_file():
        tok = AutoTokenizer.from_pretrained(saved)
    else:
        path = gguf_path("smollm2-135m-instruct")
        tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        saved.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=saved.parent))
        tok.save_pretrained(tmp)
        try:
            os.replace(tmp, saved)
        except OSError:  # another test process saved it first
            shutil.rmtree(tmp, ignore_errors=True)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def make_tiny_llama(vocab_size: int, seed: int = 0):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                      tie_word_embeddings=True, pad_token_id=2, bos_token_id=1, eos_token_id=2)
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture(scope="session")
def tiny_model(smollm_tokenizer):
    return make_tiny_llama(len(smollm_tokenizer))


@pytest.fixture()
def tiny_lm(tiny_model, smollm_tokenizer):
    from aloe.models.hf import HFCausalLM

    return HFCausalLM(tiny_model, smollm_tokenizer, batch_size=4)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_model, smollm_tokenizer):
    """The tiny model saved as a local checkpoint folder, for code that takes a model spec."""
    d = tmp_path_factory.mktemp("tiny-ckpt")
    tiny_model.save_pretrained(d)
    smollm_tokenizer.save_pretrained(d)
    return d


@pytest.fixture(scope="session")
def talking_checkpoint(tmp_path_factory, smollm_tokenizer) -> Path:
    """A tiny random Llama with untied embeddings: a tied one only repeats the prompt's last token
    (a newline), which every judge calls an empty answer (leaving no red-team pairs) and the
    human-eval build skips."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(smollm_tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                      tie_word_embeddings=False, pad_token_id=2, bos_token_id=1, eos_token_id=2)
    d = tmp_path_factory.mktemp("talking-ckpt")
    LlamaForCausalLM(cfg).save_pretrained(d)
    smollm_tokenizer.save_pretrained(d)
    return d
