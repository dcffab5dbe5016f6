"""The shared model holder: one read of the weights serves every stage and precision of a model,
and the completion cache never serves answers decoded in one precision to another."""

import torch

from aloe.models.backends import generation_identity
from aloe.models.holder import ModelHolder
from aloe.models.loading import weights_fingerprint


def test_one_read_serves_scoring_in_fp32_and_generation_in_bf16(tiny_checkpoint, monkeypatch):
    from aloe.models import hf

    reads = []
    real = hf.HFCausalLM.from_spec.__func__
    monkeypatch.setattr(hf.HFCausalLM, "from_spec",
                        classmethod(lambda cls, *a, **k: reads.append(k.get("dtype")) or real(cls, *a, **k)))
    h = ModelHolder(str(tiny_checkpoint), "float32", batch_size=4, device="cpu")
    fp32 = h.lm
    h.dtype, h.batch_size = "bfloat16", 2
    bf16 = h.lm
    assert reads == ["float32"] and (h.loads, h.casts) == (1, 1)
    assert fp32.model.dtype == torch.float32 and bf16.model.dtype == torch.bfloat16
    assert bf16.batch_size == fp32.batch_size == 2
    # the cast copy has the fp32 weights rounded, not another model
    w32, w16 = fp32.model.get_input_embeddings().weight, bf16.model.get_input_embeddings().weight
    assert torch.equal(w32.to(torch.bfloat16), w16)
    h.dtype = "float32"
    assert h.lm is fp32 and h.loads == 1


def test_fp32_after_bf16_reads_the_weights_again(tiny_checkpoint):
    h = ModelHolder(str(tiny_checkpoint), "bfloat16", device="cpu")
    assert h.lm.model.dtype == torch.bfloat16
    h.dtype = "float32"
    # bf16 weights cast up are not the checkpoint's fp32 weights
    assert h.lm.model.dtype == torch.float32 and (h.loads, h.casts) == (2, 0)


def test_completion_cache_identity_names_precision_and_engine(tiny_checkpoint):
    fp = weights_fingerprint(str(tiny_checkpoint))
    assert generation_identity(str(tiny_checkpoint), "transformers", "float32") == fp
    bf16 = generation_identity(str(tiny_checkpoint), "transformers", "bfloat16")
    vllm = generation_identity(str(tiny_checkpoint), "vllm", "bfloat16")
    assert len({fp, bf16, vllm}) == 3 and bf16.startswith(fp)
