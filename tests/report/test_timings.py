"""The report's "Where the time went": per stage seconds, computed or reused, precision and model
loads, under the CPU, its flags and torch's threads as the run recorded them."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

from aloe.cli import main
from aloe.models.precision import cpu_info
from aloe.recipe import runner
from aloe.report.page import render_report

TINY = Path(__file__).resolve().parents[1] / "recipe" / "tiny.yaml"


def _cell(page: str, key: str) -> str:
    found = re.search(rf'data-key="{re.escape(key)}"[^>]*>([^<]*)<', page)
    assert found, key
    return html.unescape(found.group(1))


def test_where_the_time_went_renders_from_real_runs(tmp_path, monkeypatch, tiny_checkpoint) -> None:
    monkeypatch.setenv(runner.RESULT_CACHE_ENV, str(tmp_path / "results"))
    pages = {}
    for name in ("one", "two"):
        run_dir = tmp_path / name
        assert main(["run", str(TINY), "--run-dir", str(run_dir), "--set", f"model={tiny_checkpoint}",
                     "--set", "report=false", "--only", "eval_base"]) == 0
        pages[name] = render_report(run_dir).read_text()
    manifest = json.loads((tmp_path / "one" / "manifest.json").read_text())
    row = next(r for r in manifest["stages"] if r["name"] == "eval_base")

    first, second = pages["one"], pages["two"]
    assert "Where the time went" in first
    assert _cell(first, "time|eval_base|how") == "computed"
    assert _cell(first, "time|eval_base|seconds") == f"{row['seconds']:.1f}"
    assert _cell(first, "time|eval_base|loads") == "1" and float(_cell(first, "time|eval_base|load_seconds")) >= 0
    dtype = row["models"][0]["dtype"]
    assert _cell(first, "time|eval_base|precision") == f"transformers {dtype} on cpu"
    assert _cell(first, "time|sft|how") == "not run" and _cell(first, "time|sft|loads") == "—"
    machine = html.unescape(re.search(r'<p id="machine">([^<]*)<', first).group(1))
    info = cpu_info()
    assert machine.startswith(f"CPU {info['model']} (torch capability {info['torch_capability']}")
    assert f"{manifest['host']['torch_threads']} torch threads" in machine
    assert all(flag in machine for flag in info["flags"])
    assert f"precision {manifest['policy']['precision']}: training {manifest['policy']['train']}" in machine

    assert _cell(second, "time|eval_base|how") == (f"reused from {tmp_path / 'one'} "
                                                   f"(computed there in {row['seconds']:.1f} s)")
    assert _cell(second, "time|eval_base|loads") == "0"
    assert _cell(second, "time|eval_base|precision") == f"transformers {dtype} on cpu"  # what computed it
