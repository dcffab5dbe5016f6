"""Issue 18: a checkpoint half-written when the run was killed must not wedge the resume (SFT and DPO)."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from aloe.io import write_jsonl
from aloe.train.align import run_align
from aloe.train.common import last_checkpoint
from aloe.train.config import AlignSettings
from aloe.train.preferences import PACKAGED, hh_pairs

COMPLETE = {"config.json": "{}", "model.safetensors": "", "optimizer.pt": "", "scheduler.pt": "", "rng_state.pth": ""}


def _checkpoint(root: Path, step: int, files: dict[str, str]) -> Path:
    d = root / "checkpoints" / f"checkpoint-{step}"
    d.mkdir(parents=True)
    for name, text in files.items():
        (d / name).write_text(text)
    return d


def _state(step: int) -> str:
    return json.dumps({"global_step": step})


def test_lookup_skips_and_moves_aside_every_newer_incomplete_checkpoint(tmp_path, caplog):
    _checkpoint(tmp_path, 2, {**COMPLETE, "trainer_state.json": _state(2)})
    lora = _checkpoint(tmp_path, 4, {"adapter_model.safetensors": "", "optimizer.pt": "", "scheduler.pt": "",
                                     "trainer_state.json": _state(4)})
    _checkpoint(tmp_path, 6, {**COMPLETE, "trainer_state.json": _state(6)[:9]})  # killed while writing the state
    _checkpoint(tmp_path, 8, {**{k: v for k, v in COMPLETE.items() if k != "scheduler.pt"},
                              "trainer_state.json": _state(8)})
    _checkpoint(tmp_path, 10, {"config.json": "{}"})  # the state: killed while saving the weights
    stale = tmp_path / "checkpoints" / "checkpoint-10.incomplete"
    stale.mkdir()  # left by an earlier crash at the same step: replaced
    with caplog.at_level(logging.WARNING, logger="aloe.train.common"):
        assert last_checkpoint(tmp_path) == str(lora)
    said = "\n".join(r.getMessage() for r in caplog.records)
    assert "checkpoint-10 is incomplete (no model weights, optimizer state, scheduler.pt, trainer_state.json" in said
    assert "checkpoint-8 is incomplete (no scheduler.pt)" in said
    assert "checkpoint-6 is incomplete (no trainer_state.json at step 6)" in said
    left = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert left == ["checkpoint-10.incomplete", "checkpoint-2", "checkpoint-4", "checkpoint-6.incomplete",
                    "checkpoint-8.incomplete"]
    assert (stale / "config.json").is_file()
    assert last_checkpoint(tmp_path) == str(lora)  # stable once the debris is aside
    assert last_checkpoint(tmp_path / "never-ran") is None


# Runs `aloe sft` with the Trainer's optimizer save of step KILL_STEP held up, after the weights are
# written and before the optimizer, scheduler and trainer state: the test kills it there.
_SLOW_SAVE = """
import os, sys, time
from pathlib import Path
from transformers import Trainer
from aloe.cli import main

save, stop = Trainer._save_optimizer_and_scheduler, int(os.environ["KILL_STEP"])

def held_up(self, output_dir):
    if self.state.global_step == stop:
        Path(os.environ["SAVING_FLAG"]).touch()
        time.sleep(600)
    save(self, output_dir)

Trainer._save_optimizer_and_scheduler = held_up
sys.exit(main(sys.argv[1:]))
"""


def test_sft_killed_while_saving_a_checkpoint_resumes_from_the_previous_one(tiny_ckpt, conversations_file, tmp_path):
    out, flag = tmp_path / "run", tmp_path / "saving"
    cfg = tmp_path / "sft.yaml"
    cfg.write_text(yaml.safe_dump({"sft": {
        "model": str(tiny_ckpt), "data": str(conversations_file), "output_dir": str(out), "max_steps": 6,
        "save_steps": 2, "batch_size": 2, "max_length": 128, "eval_fraction": 0.1}}))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "KILL_STEP": "4", "SAVING_FLAG": str(flag)}
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_SAVE, "sft", str(cfg)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + 150
    while time.time() < deadline and proc.poll() is None and not flag.exists():
        time.sleep(0.05)
    assert flag.exists(), f"never reached the save of step 4: {proc.stderr.read().decode()[-2000:] if proc.stderr else ''}"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    half = out / "checkpoints" / "checkpoint-4"
    assert (half / "model.safetensors").is_file() and not (half / "trainer_state.json").exists()

    done = subprocess.run([sys.executable, "-m", "aloe.cli", "sft", str(cfg)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "checkpoint-4 is incomplete (no optimizer state, scheduler.pt, trainer_state.json" in done.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert Path(metrics["resumed_from"]).name == "checkpoint-2"
    assert metrics["steps"] == 6 and (out / "final" / "model.safetensors").is_file()
    # the resumed run saved step 4 again, whole, in a fresh folder
    assert json.loads((half / "trainer_state.json").read_text())["global_step"] == 4
    # the debris moved aside counts as an old checkpoint for save_total_limit (2), and so is rotated away
    assert sorted(p.name for p in (out / "checkpoints").glob("checkpoint-*")) == ["checkpoint-4", "checkpoint-6"]


def test_dpo_resumes_past_a_checkpoint_holding_only_its_config(tiny_ckpt, tmp_path):
    data = tmp_path / "p.jsonl"
    write_jsonl(data, (p.to_dict() for p in hh_pairs(PACKAGED / "hh_rlhf_harmless.jsonl", 8)))
    s = AlignSettings(model=str(tiny_ckpt), output_dir=str(tmp_path / "out"), batch_size=2, max_length=128,
                      save_steps=1, eval_fraction=0.25,
                      stages=[{"data": str(data), "max_steps": 2, "learning_rate": 1e-3}])
    first = run_align(s)["stages"][0]
    assert first["steps"] == 2 and first["resumed_from"] is None
    # the state the issue reports, as a kill during the save of step 2 left it: config.json only, no final
    stage = tmp_path / "out" / "stage1"
    ckpt2 = stage / "checkpoints" / "checkpoint-2"
    for f in ckpt2.iterdir():
        if f.name != "config.json":
            f.unlink()
    for done in (stage / "final", stage / "metrics.json"):
        os.replace(done, tmp_path / f"gone-{done.name}")
    again = run_align(s)["stages"][0]
    assert Path(again["resumed_from"]).name == "checkpoint-1"
    assert again["steps"] == 2 and (stage / "final" / "model.safetensors").is_file()
    assert (stage / "checkpoints" / "checkpoint-2.incomplete" / "config.json").is_file()
