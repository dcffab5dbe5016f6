"""Issue 18: two `aloe run` on one run directory cannot interleave; a killed holder frees it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aloe.recipe.lock import RunDirBusy, run_dir_lock

TINY = Path(__file__).with_name("tiny.yaml")

_HOLD = """
import sys, time
from pathlib import Path
from aloe.recipe.lock import run_dir_lock
with run_dir_lock(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(600)
"""


def test_a_second_run_fails_fast_naming_the_directory_and_the_holder_until_the_holder_is_killed(tmp_path):
    run_dir = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(run_dir)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        t0 = time.perf_counter()
        second = subprocess.run([sys.executable, "-m", "aloe.cli", "run", str(TINY), "--run-dir", str(run_dir)],
                                capture_output=True, text=True, timeout=120,
                                env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert time.perf_counter() - t0 < 60
        assert second.returncode == 2, second.stderr[-2000:]
        assert (f"aloe run: error: {run_dir} is in use by another `aloe run` (pid {holder.pid}, "
                f"holding {run_dir / '.lock'})") in second.stderr
        assert not (run_dir / "manifest.json").exists() and not (run_dir / "curate").exists()  # it ran nothing
        with pytest.raises(RunDirBusy, match=f"pid {holder.pid}"):
            with run_dir_lock(run_dir):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # the kernel dropped the dead holder's lock: no stale lock to clean up by hand
    with run_dir_lock(run_dir):
        assert (run_dir / ".lock").read_text() == f"{os.getpid()}\n"
