"""`aloe sft --accelerate-config`: the shipped configs parse, and a launch runs end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from aloe.train.cli import accelerate_config_path


@pytest.mark.parametrize("name,kind", [("zero3", "DEEPSPEED"), ("fsdp", "FSDP")])
def test_shipped_accelerate_configs_parse(name, kind):
    from accelerate.commands.config.config_args import load_config_from_file

    cfg = load_config_from_file(str(accelerate_config_path(name)))
    assert cfg.distributed_type.value == kind and cfg.mixed_precision == "bf16"


def test_unknown_accelerate_config_lists_known_ones():
    with pytest.raises(FileNotFoundError, match="known: ddp, fsdp, zero3"):
        accelerate_config_path("nope")


@pytest.mark.slow
def test_sft_launched_through_accelerate(tiny_ckpt, conversations_file, tmp_path):
    acc = tmp_path / "cpu.yaml"
    acc.write_text(yaml.safe_dump({"compute_environment": "LOCAL_MACHINE", "distributed_type": "NO",
                                   "use_cpu": True, "num_processes": 1, "num_machines": 1,
                                   "mixed_precision": "no"}))
    cfg = tmp_path / "sft.yaml"
    cfg.write_text(yaml.safe_dump({"model": str(tiny_ckpt), "data": str(conversations_file),
                                   "output_dir": str(tmp_path / "run"), "max_steps": 2, "batch_size": 2,
                                   "max_length": 128, "eval_fraction": 0.0}))
    done = subprocess.run([sys.executable, "-m", "aloe.cli", "sft", str(cfg), "--accelerate-config", str(acc)],
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "accelerate.commands.launch" in done.stderr
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["steps"] == 2
