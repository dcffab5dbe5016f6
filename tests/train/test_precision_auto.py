"""`bf16: auto` for training: resolved from the hardware, run as autocast over fp32 weights, recorded."""

from __future__ import annotations

import json

import pytest
import torch

from aloe.models import precision
from aloe.train import sft
from aloe.train.common import load_model_for_training, trainer_args
from aloe.train.config import AlignSettings, SFTSettings


def settings(tmp_path, data: str = "unused.jsonl", **kw) -> SFTSettings:
    return SFTSettings(model="embedded:smollm2-135m-instruct", data=data, output_dir=str(tmp_path), **kw)


@pytest.mark.parametrize("capable", [True, False])
def test_auto_follows_the_cpu(tmp_path, monkeypatch, capable: bool) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(precision, "cpu_bf16_capable", lambda: capable)
    assert trainer_args(settings(tmp_path, bf16="auto"))["bf16"] is capable


def test_auto_keeps_dpo_in_fp32_on_a_cpu(tmp_path, monkeypatch) -> None:
    # measured: DPO's loss collapses under CPU bf16 autocast (benchmarks/precision_speed.py)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(precision, "cpu_bf16_capable", lambda: True)
    align = AlignSettings(model="embedded:smollm2-135m-instruct", output_dir=str(tmp_path),
                          stages=[{"data": "unused.jsonl"}], bf16="auto")
    assert trainer_args(align)["bf16"] is False


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
