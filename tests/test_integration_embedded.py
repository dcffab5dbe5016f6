"""Integration tests on the real embedded SmolLM2-135M-Instruct (slow: run with -m slow)."""

import pytest

pytestmark = pytest.mark.slow


def test_embedded_checkpoint_roundtrip_is_exact(tmp_path, monkeypatch):
    import torch
    from transformers import AutoModelForCausalLM

    from aloe.models.embedded import COMPLETE_MARKER, embedded_checkpoint, gguf_path

    import gguf

    parses: list[str] = []
    reader = gguf.GGUFReader
    monkeypatch.setattr(gguf, "GGUFReader", lambda path, *a: parses.append(str(path)) or reader(path, *a))
    monkeypatch.setenv("ALOE_CACHE", str(tmp_path))
    ckpt = embedded_checkpoint("smollm2-135m-instruct")
    assert len(parses) == 1  # tokenizer, config and weights share one parse of the GGUF
    assert (ckpt / COMPLETE_MARKER).is_file() and (ckpt / "model.safetensors").is_file()
    assert "im_start" in (ckpt / "chat_template.jinja").read_text()
    src = gguf_path("smollm2-135m-instruct")
    from_gguf = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name)
    saved = AutoModelForCausalLM.from_pretrained(ckpt, use_safetensors=True)
    for (n1, p1), (_, p2) in zip(from_gguf.state_dict().items(), saved.state_dict().items(), strict=True):
        assert torch.equal(p1, p2), n1
    assert embedded_checkpoint("smollm2-135m-instruct") == ckpt  # second call reuses the cache


def test_aloe_eval_on_the_embedded_model(tmp_path):
    from aloe.cli import main
    from aloe.io import read_json

    assert main(["eval", "--limit", "10", "--out", str(tmp_path), "--no-progress"]) == 0
    summary = read_json(tmp_path / "metrics.json")
    assert len(summary["benchmarks"]) == 6
    # SmolLM2-135M is weak, but not degenerate: it beats an all-wrong model on the yes/no/maybe set
    assert summary["benchmarks"]["pubmedqa"]["accuracy"] > 0.2
