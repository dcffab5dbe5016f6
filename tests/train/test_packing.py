"""Packed SFT batches must not let one sample attend to another."""

from __future__ import annotations

import torch

from aloe.train.config import SFTSettings
from aloe.train.sft import build_datasets, make_trainer


def _first_packed_batch(tiny_ckpt, conversations_file, tmp_path):
    s = SFTSettings(model=str(tiny_ckpt), data=str(conversations_file), output_dir=str(tmp_path), packing=True,
                    batch_size=4, max_length=256, eval_fraction=0.0)
    train_ds, _ = build_datasets(s)
    trainer = make_trainer(s, train_ds, None)
    batch = next(iter(trainer.get_train_dataloader()))
    return trainer, batch


def test_packed_batch_logits_equal_each_sample_alone(tiny_ckpt, conversations_file, tmp_path):
    trainer, batch = _first_packed_batch(tiny_ckpt, conversations_file, tmp_path)
    model = trainer.model.eval()
    ids, pos = batch["input_ids"], batch["position_ids"]
    assert "attention_mask" not in batch  # a mask would hide the sample boundaries from transformers
    starts = (pos[0] == 0).nonzero().flatten().tolist()
    assert len(starts) >= 3, "the batch should pack several samples"
    bounds = list(zip(starts, starts[1:] + [ids.shape[1]]))
    assert model.config._attn_implementation == "sdpa_varlen"
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        packed = model(**inputs).logits[0]
        # the same row through transformers' own sdpa with the block-diagonal mask from position_ids
        model.set_attn_implementation("sdpa")
        masked = model(input_ids=ids, position_ids=pos).logits[0]
        assert torch.allclose(packed, masked, atol=1e-4)
        for a, b in bounds:
            alone = model(input_ids=ids[:, a:b]).logits[0]
            assert torch.allclose(packed[a:b], alone, atol=1e-4), f"sample at {a}:{b} saw tokens of another sample"
        # Control: the same row under one plain causal mask does differ after the first sample, so
        # the check above would catch cross-sample attention.
        leaky = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0]
    a, b = bounds[1]
    assert not torch.allclose(leaky[a:b], packed[a:b], atol=1e-3)


def test_packed_labels_cover_only_completions(tiny_ckpt, conversations_file, tmp_path, smollm_tokenizer):
    _, batch = _first_packed_batch(tiny_ckpt, conversations_file, tmp_path)
    ids, labels, pos = batch["input_ids"][0], batch["labels"][0], batch["position_ids"][0]
    starts = (pos == 0).nonzero().flatten().tolist()
    for a, b in zip(starts, starts[1:] + [len(ids)]):
        text_all = smollm_tokenizer.decode(ids[a:b])
        trained = smollm_tokenizer.decode(ids[a:b][labels[a:b] != -100])
        assert "<|im_start|>user" in text_all
        assert "user" not in trained.split("<|im_end|>")[0][:10]  # the prompt is not learned
        assert trained.rstrip().endswith("<|im_end|>")  # the end of turn is learned, so the model stops
        assert 0 < (labels[a:b] != -100).sum() < b - a
