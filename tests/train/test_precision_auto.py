"""`bf16: auto` for training: resolved from the hardware, run as autocast over fp32 weights, recorded."""

from __future__ import annotations

import json

import pytest
import torch

from aloe.models import precision
from aloe.train import sft
from aloe.train.common import load_model_for_training, spread_in_bf16_cells, trainer_args
from aloe.train.config import AlignSettings, SFTSettings


def settings(tmp_path, data: str = "unused.jsonl", **kw) -> SFTSettings:
    return SFTSettings(model="embedded:smollm2-135m-instruct", data=data, output_dir=str(tmp_path), **kw)


@pytest.mark.parametrize("capable", [True, False])
def test_auto_follows_the_cpu(tmp_path, monkeypatch, capable: bool) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(precision, "cpu_bf16_capable", lambda: capable)
    assert trainer_args(settings(tmp_path, bf16="auto"))["bf16"] is capable


@pytest.mark.parametrize("capable", [True, False])
def test_auto_follows_the_cpu_for_dpo_too(tmp_path, monkeypatch, capable: bool) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(precision, "cpu_bf16_capable", lambda: capable)
    align = AlignSettings(model="embedded:smollm2-135m-instruct", output_dir=str(tmp_path),
                          stages=[{"data": "unused.jsonl"}], bf16="auto")
    assert trainer_args(align)["bf16"] is capable


def on_bf16_ties(model: torch.nn.Module) -> torch.nn.Module:
    """Every nn.Linear weight exactly halfway between two bf16 values, where 8.1% of the embedded
    SmolLM2's weights sit (dequantised from a 4-bit GGUF with fp16 scales)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Linear):
                held = m.weight.bfloat16()
                up = torch.nextafter(held, torch.full_like(held, float("inf"))).float()
                m.weight.copy_((held.float() + up) / 2)
    return model


def test_spread_keeps_what_autocast_computes_with(tiny_model) -> None:
    import copy

    tied = on_bf16_ties(copy.deepcopy(tiny_model))
    before = {n: p.detach().clone() for n, p in tied.named_parameters()}
    spread_in_bf16_cells(tied, seed=0)
    again = on_bf16_ties(copy.deepcopy(tiny_model))
    spread_in_bf16_cells(again, seed=0)
    for name, p in tied.named_parameters():
        assert torch.equal(p.bfloat16(), before[name].bfloat16()), name  # the bf16 copy is unchanged
        assert torch.equal(p, dict(again.named_parameters())[name]), name  # seeded
    w, w0 = tied.model.layers[0].mlp.up_proj.weight.detach(), before["model.layers.0.mlp.up_proj.weight"]
    held = w0.bfloat16()
    lo = (held.float() + torch.nextafter(held, torch.full_like(held, float("-inf"))).float()) / 2
    hi = (held.float() + torch.nextafter(held, torch.full_like(held, float("inf"))).float()) / 2
    place = (w - lo) / (hi - lo)  # 0 and 1: the cell's edges, the ties
    assert 0 < float(place.min()) and float(place.max()) < 1
    assert 0.23 < float((place < 0.25).float().mean()) < 0.27  # uniform over the cell
    assert torch.equal(tied.model.norm.weight, before["model.norm.weight"])  # autocast leaves norms in fp32


def test_dpo_under_bf16_autocast_tracks_fp32(tmp_path, monkeypatch, tiny_model, smollm_tokenizer) -> None:
    """Per-step DPO losses on a model whose weights sit on bf16 ties: under bf16 autocast within 0.01
    of fp32 for 6 steps (measured 0.0025); without the spread the first step already jumps (0.023)."""
    import copy

    from aloe.io import write_jsonl
    from aloe.train import align
    from aloe.train.preferences import PACKAGED, hh_pairs

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(precision, "cpu_bf16_capable", lambda: True)
    model = tmp_path / "model"
    on_bf16_ties(copy.deepcopy(tiny_model)).save_pretrained(model)
    smollm_tokenizer.save_pretrained(model)
    data = tmp_path / "pairs.jsonl"
    write_jsonl(data, (p.to_dict() for p in hh_pairs(PACKAGED / "hh_rlhf_harmless.jsonl", 16)))

    def losses(name: str, bf16: bool | str) -> tuple[list[float], str]:
        s = AlignSettings(model=str(model), output_dir=str(tmp_path / name), batch_size=2, max_length=128, bf16=bf16,
                          save_steps=6, logging_steps=1, eval_fraction=0.0, group_by_length=False,
                          stages=[{"data": str(data), "max_steps": 6, "learning_rate": 1e-6, "beta": 1.0}])
        metrics = align.run_align(s)["stages"][0]
        state = json.loads((tmp_path / name / "stage1" / "checkpoints" / "checkpoint-6" / "trainer_state.json").read_text())
        return [h["loss"] for h in state["log_history"] if "loss" in h], metrics["precision"]["compute"]

    fp32, compute = losses("fp32", False)
    assert compute == "fp32" and len(fp32) == 6
    bf16, compute = losses("bf16", "auto")
    assert compute == "bf16"
    assert max(abs(a - b) for a, b in zip(fp32, bf16, strict=True)) < 0.01, (fp32, bf16)
    monkeypatch.setattr(align, "spread_in_bf16_cells", lambda model, seed: None)
    ties, _ = losses("ties", "auto")
    assert max(abs(a - b) for a, b in zip(fp32, ties, strict=True)) > 0.01, (fp32, ties)


def test_explicit_values_are_kept_and_others_refused(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(precision, "cpu_bf16_capable", lambda: True)
    assert trainer_args(settings(tmp_path, bf16=False))["bf16"] is False
    assert trainer_args(settings(tmp_path, bf16=True))["bf16"] is True
    with pytest.raises(ValueError):
        settings(tmp_path, bf16="fast")


def test_sft_with_auto_autocasts_over_fp32_weights_and_records_it(tiny_ckpt, conversations_file, tmp_path,
                                                                  monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(precision, "cpu_bf16_capable", lambda: True)
    seen: list[tuple[torch.dtype, bool]] = []
    make_trainer = sft.make_trainer

    def watched(*args, **kwargs):
        trainer = make_trainer(*args, **kwargs)
        # a layer, not the model: accelerate enters autocast inside the model's wrapped forward
        trainer.model.model.layers[0].register_forward_pre_hook(
            lambda m, _inputs: seen.append((next(m.parameters()).dtype, torch.is_autocast_enabled("cpu"))))
        return trainer

    monkeypatch.setattr(sft, "make_trainer", watched)
    s = SFTSettings(model=str(tiny_ckpt), data=str(conversations_file), output_dir=str(tmp_path / "run"),
                    max_steps=2, batch_size=4, max_length=256, save_steps=100, eval_fraction=0.2, bf16="auto")
    assert load_model_for_training(s)[0].dtype == torch.float32
    m = sft.run_sft(s)
    assert m["steps"] == 2
    # training steps ran under bf16 autocast, the weights stayed fp32
    assert (torch.float32, True) in seen and all(dtype == torch.float32 for dtype, _ in seen)
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())["precision"]
    assert saved["compute"] == "bf16" and saved["weights"] == "float32"
    assert saved["cpu"]["torch_capability"] == precision.torch_cpu_capability()
