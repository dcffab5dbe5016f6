"""Streaming merges of real (tiny) checkpoints: same result as merging in memory, clear errors."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from aloe.merge.merger import MergeConfig, MergeInput, merge_checkpoints
from aloe.merge.methods import get_method


@pytest.fixture(scope="module")
def two_checkpoints(tmp_path_factory, tiny_model, smollm_tokenizer):
    """The tiny model and a copy with every weight moved by Gaussian noise (a stand-in fine-tune)."""
    import copy

    root = tmp_path_factory.mktemp("ckpts")
    other = copy.deepcopy(tiny_model)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=g))
    paths = []
    for i, model in enumerate((tiny_model, other)):
        path = root / f"m{i}"
        model.save_pretrained(path)
        smollm_tokenizer.save_pretrained(path)
        paths.append(path)
    return paths


@pytest.mark.parametrize("method,params", [("linear", {}), ("slerp", {"t": 0.3}), ("ties", {}),
                                           ("task_arithmetic", {"lam": 0.7})])
def test_streamed_merge_equals_in_memory_merge(two_checkpoints, tmp_path, method, params):
    a, b = two_checkpoints
    base = None if method == "linear" else str(a)
    models = [MergeInput(model=str(a)), MergeInput(model=str(b), weight=2.0)] if method == "linear" \
        else [MergeInput(model=str(b), weight=0.8, density=0.6)]
    out = merge_checkpoints(MergeConfig(method=method, base_model=base, models=models, parameters=params), tmp_path / "out")
    ta, tb, merged = load_file(a / "model.safetensors"), load_file(b / "model.safetensors"), load_file(out / "model.safetensors")
    assert set(merged) == set(ta)
    fn = get_method(method).fn
    for name in ta:
        if method == "linear":
            want = fn(None, [ta[name], tb[name]], weights=[1.0, 2.0], **params)
        else:
            want = fn(ta[name], [tb[name]], weights=[0.8], densities=[0.6], **params)
        assert torch.allclose(merged[name], want.to(merged[name].dtype), atol=1e-6), name
    # the output is a loadable checkpoint
    from transformers import AutoModelForCausalLM
    AutoModelForCausalLM.from_pretrained(out)
    assert json.loads((out / "aloe-merge.json").read_text())["config"]["method"] == method


def test_dare_ties_is_reproducible_and_bf16_output(two_checkpoints, tmp_path):
    a, b = two_checkpoints
    cfg = MergeConfig(method="dare_ties", base_model=str(a), models=[MergeInput(model=str(b), density=0.5)],
                      dtype="bf16", seed=3)
    o1 = load_file(merge_checkpoints(cfg, tmp_path / "o1") / "model.safetensors")
    o2 = load_file(merge_checkpoints(cfg, tmp_path / "o2") / "model.safetensors")
    assert all(t.dtype == torch.bfloat16 for t in o1.values())
    assert all(torch.equal(o1[k], o2[k]) for k in o1)


def test_architecture_mismatch_is_a_clear_error(two_checkpoints, tmp_path, smollm_tokenizer):
    import transformers

    cfg = transformers.LlamaConfig(vocab_size=len(smollm_tokenizer), hidden_size=32, intermediate_size=64,
                                   num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
    other = tmp_path / "small"
    transformers.LlamaForCausalLM(cfg).save_pretrained(other)
    smollm_tokenizer.save_pretrained(other)
    with pytest.raises(ValueError, match="config.json field 'hidden_size' is 64 in .* but 32 in"):
        merge_checkpoints(MergeConfig(method="linear", models=[MergeInput(model=str(two_checkpoints[0])),
                                                              MergeInput(model=str(other))]), tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_shape_and_tokenizer_mismatch_are_clear_errors(two_checkpoints, tmp_path):
    import shutil

    from safetensors.torch import save_file

    a, b = two_checkpoints
    bad = tmp_path / "bad"
    shutil.copytree(b, bad)
    tensors = load_file(bad / "model.safetensors")
    tensors["model.norm.weight"] = torch.ones(65)
    save_file(tensors, bad / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"tensor 'model.norm.weight' has shape \[64\] in .* but \[65\]"):
        merge_checkpoints(MergeConfig(method="slerp", base_model=str(a), models=[MergeInput(model=str(bad))]),
                          tmp_path / "x")
    tok = tmp_path / "tok"
    shutil.copytree(b, tok)
    data = json.loads((tok / "tokenizer.json").read_text())
    data["model"]["vocab"]["zzz-new-token"] = data["model"]["vocab"].pop(next(iter(data["model"]["vocab"])))
    (tok / "tokenizer.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="tokenizers differ"):
        merge_checkpoints(MergeConfig(method="slerp", base_model=str(a), models=[MergeInput(model=str(tok))]),
                          tmp_path / "y")
