"""SFT on the tiny model: LoRA merged on save, chat template for a base model, clear errors, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from aloe.io import RecordError
from aloe.train.common import CHATML, load_model_for_training, set_chat_template
from aloe.train.config import SFTSettings
from aloe.train.data import load_conversations, to_prompt_completion
from aloe.train.sft import run_sft


def test_lora_sft_saves_a_plain_merged_checkpoint(tiny_ckpt, conversations_file, tmp_path):
    from transformers import AutoModelForCausalLM

    s = SFTSettings(model=str(tiny_ckpt), data=str(conversations_file), output_dir=str(tmp_path / "run"),
                    method="lora", max_steps=3, batch_size=4, max_length=256, learning_rate=1e-3,
                    save_steps=100, eval_fraction=0.2, lora={"r": 4, "alpha": 8})
    m = run_sft(s)
    assert m["steps"] == 3 and m["eval_examples"] == 8
    assert m["eval_loss_before"] > 0 and m["eval_loss_after"] > 0
    final = tmp_path / "run" / "final"
    assert (final / "model.safetensors").is_file() and not (final / "adapter_config.json").exists()
    model = AutoModelForCausalLM.from_pretrained(final)
    assert not any("lora" in n for n, _ in model.named_parameters())
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["steps"] == 3
    assert run_sft(s)["steps"] == 3  # complete: not trained again


def test_full_sft_on_cpu_never_runs_trls_gpu_shaped_lm_head(tiny_ckpt, conversations_file, tmp_path, monkeypatch):
    """Validation before, training and validation after all score through `cpu_lm_head`'s plain
    head: TRL's tile loop (stubbed here to fail) is never reached (benchmarks/sft_speed.py: 1.7x)."""
    import trl.trainer.utils as tu

    class NotOnCpu:
        @staticmethod
        def apply(*args, **kwargs):
            raise AssertionError("TRL's chunked LM head ran on the CPU")

    monkeypatch.setattr(tu, "_ChunkedLogProbFunction", NotOnCpu)
    s = SFTSettings(model=str(tiny_ckpt), data=str(conversations_file), output_dir=str(tmp_path / "run"),
                    max_steps=2, batch_size=4, max_length=256, save_steps=100, eval_fraction=0.2)
    m = run_sft(s)
    assert m["steps"] == 2 and m["eval_loss_after"] < m["eval_loss_before"] + 1.0
    assert tu._ChunkedLogProbFunction is NotOnCpu  # restored after the run


def test_qlora_without_cuda_is_a_clear_error(tiny_ckpt, conversations_file, tmp_path):
    s = SFTSettings(model=str(tiny_ckpt), data=str(conversations_file), output_dir=str(tmp_path), method="qlora")
    with pytest.raises(ValueError, match="qlora needs a CUDA GPU"):
        load_model_for_training(s)


def test_base_model_without_template_gets_chatml(tiny_model, smollm_tokenizer):
    import copy

    tok = copy.deepcopy(smollm_tokenizer)
    tok.chat_template = None
    set_chat_template(tok, tiny_model, None)
    assert tok.chat_template == CHATML and tok.eos_token == "<|im_end|>"
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    # a model's own template is kept unless another is asked for
    own = smollm_tokenizer.chat_template
    set_chat_template(smollm_tokenizer, tiny_model, None)
    assert smollm_tokenizer.chat_template == own


def test_system_prompt_and_last_assistant_turn(conversations_file):
    conv = load_conversations(conversations_file)[0]
    row = to_prompt_completion(conv, system_prompt="Be careful.")
    assert row["prompt"][0] == {"role": "system", "content": "Be careful."}
    assert row["completion"][0]["role"] == "assistant" and row["completion"][0]["content"] == conv.messages[-1]["content"]


def test_bad_record_names_file_line_and_field(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "a", "source": "x", "messages": [{"role": "user", "content": "q"},
                                                                       {"role": "assistant", "content": "a"}]})
                   + "\n" + json.dumps({"id": "b", "source": "x", "messages": [{"role": "robot", "content": "q"}]}) + "\n")
    with pytest.raises(RecordError, match=r"bad.jsonl:2 field 'messages\[0\]'"):
        load_conversations(bad)


def test_killed_sft_run_resumes_from_its_last_checkpoint(tiny_ckpt, conversations_file, tmp_path):
    out = tmp_path / "run"
    cfg = tmp_path / "sft.yaml"
    cfg.write_text(yaml.safe_dump({"sft": {
        "model": str(tiny_ckpt), "data": str(conversations_file), "output_dir": str(out), "max_steps": 12,
        "save_steps": 2, "save_total_limit": 3, "batch_size": 2, "max_length": 128, "eval_fraction": 0.1}}))
    cmd = [sys.executable, "-m", "aloe.cli", "sft", str(cfg)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    ckpts = out / "checkpoints"
    deadline = time.time() + 150
    while time.time() < deadline and proc.poll() is None:
        if any((c / "trainer_state.json").is_file() for c in ckpts.glob("checkpoint-*")):
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "final").exists()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["resumed_from"] and Path(metrics["resumed_from"]).name.startswith("checkpoint-")
    assert int(Path(metrics["resumed_from"]).name.split("-")[1]) >= 2
    assert metrics["steps"] == 12 and (out / "final" / "model.safetensors").is_file()


def test_max_eval_examples_takes_a_seeded_sample_of_the_held_out_conversations(conversations_file, tmp_path):
    from aloe.train.sft import build_datasets

    s = SFTSettings(data=str(conversations_file), output_dir=str(tmp_path), eval_fraction=0.5)
    _, full = build_datasets(s)
    assert len(full) == 20
    capped = s.model_copy(update={"max_eval_examples": 5})
    train, held = build_datasets(capped)
    assert len(held) == 5 and len(train) == 20  # only the evaluation shrinks
    assert [r["completion"] for r in held] == [r["completion"] for r in build_datasets(capped)[1]]
    assert {str(r["completion"]) for r in held} <= {str(r["completion"]) for r in full}
