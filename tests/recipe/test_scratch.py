"""A done stage's scratch (training checkpoints) is deleted after its marker; a failed or kept one stays."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from aloe.recipe.runner import MARKER, Runner, StageSpec


def _train_like(ctx: Any) -> dict[str, Any]:
    """Writes what a training stage leaves: checkpoints per DPO stage and a final model."""
    sdir: Path = ctx["dir"]
    for k in (1, 2):
        ckpt = sdir / f"stage{k}" / "checkpoints" / "checkpoint-4"
        ckpt.mkdir(parents=True, exist_ok=True)
        (ckpt / "optimizer.pt").write_bytes(b"x" * 1000)
        (sdir / f"stage{k}" / "final").mkdir(exist_ok=True)
        (sdir / f"stage{k}" / "final" / "model.safetensors").write_bytes(b"w" * 10)
    if ctx.get("fail"):
        raise RuntimeError("killed mid-training")
    return {"steps": 4}


def _runner(tmp_path: Path, keep: bool, fail: bool = False) -> Runner:
    spec = StageSpec("align", _train_like, lambda ctx: {"lr": 1e-5}, scratch=["stage*/checkpoints", "absent/*"])
    return Runner(tmp_path, [spec], {"dir": tmp_path / "align", "fail": fail}, progress=lambda m: None,
                  result_cache=None, keep_scratch=keep)


def test_a_done_stage_loses_its_scratch_and_keeps_its_outputs(tmp_path: Path) -> None:
    m = _runner(tmp_path, keep=False).run(_runner(tmp_path, keep=False).stages)
    row = m["stages"][0]
    assert row["status"] == "done"
    assert row["scratch_deleted"] == {"paths": ["stage1/checkpoints", "stage2/checkpoints"], "bytes": 2000}
    assert not list(tmp_path.rglob("checkpoints"))
    assert (tmp_path / "align" / "stage2" / "final" / "model.safetensors").is_file()
    assert (tmp_path / "align" / MARKER).is_file()
    assert json.loads((tmp_path / "manifest.json").read_text())["stages"][0]["scratch_deleted"]["bytes"] == 2000


def test_kept_on_request_and_after_a_failure(tmp_path: Path) -> None:
    kept = tmp_path / "kept"
    m = _runner(kept, keep=True).run(_runner(kept, keep=True).stages)
    assert "scratch_deleted" not in m["stages"][0]
    assert len(list(kept.rglob("checkpoint-4"))) == 2

    failed = tmp_path / "failed"
    r = _runner(failed, keep=False, fail=True)
    with pytest.raises(RuntimeError, match="killed mid-training"):
        r.run(r.stages)
    # what a resumed attempt needs is still there
    assert len(list(failed.rglob("checkpoint-4"))) == 2 and not (failed / "align" / MARKER).exists()


def test_a_path_that_cannot_be_deleted_leaves_the_stage_done(tmp_path: Path, monkeypatch, caplog) -> None:
    import shutil

    real = shutil.rmtree

    def refuse_stage1(path: Path, *a: Any, **k: Any) -> None:
        if "stage1" in str(path):
            raise PermissionError("read-only")
        real(path, *a, **k)

    monkeypatch.setattr(shutil, "rmtree", refuse_stage1)
    r = _runner(tmp_path, keep=False)
    row = r.run(r.stages)["stages"][0]
    assert row["status"] == "done" and (tmp_path / "align" / MARKER).is_file()
    assert row["scratch_deleted"] == {"paths": ["stage2/checkpoints"], "bytes": 1000}  # only what went
    assert (tmp_path / "align" / "stage1" / "checkpoints").is_dir()
    assert "could not delete" in caplog.text
