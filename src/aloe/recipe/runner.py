"""The stage runner: stages in order, each skipped when its config and inputs are unchanged.

A stage's identity is a hash of its name, its resolved settings and the hashes of the stages it
reads (plus the content of external input files), so a change anywhere upstream reruns everything
downstream and nothing else. Completion is marked by `<stage>/_stage.json`, written last and
atomically; a folder without it is never trusted. A stage that was killed resumes in place when its
hash is unchanged (the stages keep their own checkpoints and completion caches), and starts from an
empty folder when its hash changed. `manifest.json` is rewritten after every stage transition.
A run holds the run directory's lock (`lock.py`) throughout, so two runs can never interleave there.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aloe.io import read_json, write_json
from aloe.recipe.lock import run_dir_lock

log = logging.getLogger(__name__)
MARKER = "_stage.json"
RUNNING = "_running.json"


@dataclass
class StageSpec:
    name: str
    run: Callable[[Any], dict[str, Any]]  # (context) -> summary counts, JSON-serialisable
    settings: Callable[[Any], Any]  # (context) -> what the stage's hash covers
    after: Sequence[str] = ()  # stages whose outputs it reads
    external: Callable[[Any], Iterable[Path]] = lambda ctx: ()  # files outside the run it reads
    outputs: Sequence[str] = ()  # relative to the run dir, for the manifest and the report
    folder: str | None = None  # relative to the run dir; default: the stage's name


def _utc() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def file_digest(path: Path) -> str:
    """sha256 of a file, or of a folder's files (names and contents)."""
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        h.update(str(f.relative_to(path) if path.is_dir() else f.name).encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def _jsonable(x: Any) -> Any:
    if hasattr(x, "model_dump"):
        return x.model_dump(mode="json")
    if isinstance(x, Path):
        return str(x)
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


def git_revision() -> str:
    root = Path(__file__).resolve().parents[3]
    try:
        rev = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        return rev + (" (dirty)" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("aloe", "torch", "transformers", "trl", "peft", "datasets", "accelerate",
                 "sentence-transformers", "safetensors", "vllm", "deepspeed"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


def peak_rss_mib() -> float:
    """Peak resident memory of this process and its finished children (accelerate launches)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return round(max(own, kids) / 1024, 1)  # Linux reports KiB


@dataclass
class Runner:
    run_dir: Path
    stages: Sequence[StageSpec]
    ctx: Any
    manifest_extra: dict[str, Any] = field(default_factory=dict)
    progress: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr, flush=True)

    def __post_init__(self) -> None:
        self.by_name = {s.name: s for s in self.stages}
        self._hashes: dict[str, str] = {}

    # -- hashing ---------------------------------------------------------------------------
    def stage_hash(self, spec: StageSpec) -> str:
        if spec.name in self._hashes:
            return self._hashes[spec.name]
        h = hashlib.sha256(spec.name.encode())
        h.update(json.dumps(_jsonable(spec.settings(self.ctx)), sort_keys=True, default=str).encode())
        for dep in spec.after:
            h.update(self.stage_hash(self.by_name[dep]).encode())
        for p in sorted(spec.external(self.ctx)):
            h.update(str(p).encode())
            h.update(file_digest(p).encode() if p.exists() else b"missing")
        self._hashes[spec.name] = h.hexdigest()
        return self._hashes[spec.name]

    def is_done(self, spec: StageSpec) -> bool:
        marker = self.run_dir / (spec.folder or spec.name) / MARKER
        return marker.is_file() and read_json(marker).get("hash") == self.stage_hash(spec)

    # -- plan --------------------------------------------------------------------------------
    def select(self, start: str | None = None, only: Sequence[str] = ()) -> list[StageSpec]:
        names = [s.name for s in self.stages]
        for n in [start, *only]:
            if n is not None and n not in names:
                raise ValueError(f"unknown stage {n!r}; stages of this recipe: {', '.join(names)}")
        if only:
            return [s for s in self.stages if s.name in set(only)]
        if start:
            return list(self.stages[names.index(start):])
        return list(self.stages)

    def plan(self, selected: Sequence[StageSpec]) -> list[dict[str, Any]]:
        chosen = {s.name for s in selected}
        rows = []
        for s in self.stages:
            status = "skip (not selected)" if s.name not in chosen else ("done, will skip" if self.is_done(s) else "will run")
            rows.append({"name": s.name, "status": status, "hash": self.stage_hash(s)[:12], "after": list(s.after)})
        return rows

    # -- running -----------------------------------------------------------------------------
    def _manifest(self) -> dict[str, Any]:
        path = self.run_dir / "manifest.json"
        if path.is_file():
            m = read_json(path)
        else:
            m = {"started": _utc(), "stages": []}
        m.update(self.manifest_extra)
        m.update({"git_revision": git_revision(), "versions": library_versions(),
                  "host": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "gpu": _gpu_name()}})
        known = {r["name"]: r for r in m.get("stages", [])}
        m["stages"] = [known.get(s.name, {"name": s.name, "status": "pending"}) for s in self.stages]
        return m

    def _save(self, m: dict[str, Any]) -> None:
        m["peak_rss_mib"] = max(m.get("peak_rss_mib", 0.0), peak_rss_mib())
        write_json(self.run_dir / "manifest.json", m)

    def run(self, selected: Sequence[StageSpec]) -> dict[str, Any]:
        with run_dir_lock(self.run_dir):
            return self._run(selected)

    def _run(self, selected: Sequence[StageSpec]) -> dict[str, Any]:
        m = self._manifest()
        rows = {r["name"]: r for r in m["stages"]}
        chosen = [s.name for s in selected]
        t_run = time.perf_counter()
        for s in selected:
            missing = [d for d in s.after if d not in chosen and not self.is_done(self.by_name[d])]
            if missing:
                raise ValueError(f"stage {s.name} needs {', '.join(missing)} first: "
                                 f"run without --only/--from, or with --from {missing[0]}")
        for i, s in enumerate(selected, 1):
            row = rows[s.name]
            digest = self.stage_hash(s)
            if self.is_done(s):
                row["status"] = "skipped"
                self.progress(f"[{i}/{len(selected)}] {s.name}: unchanged, skipped")
                self._save(m)
                continue
            sdir = self.run_dir / (s.folder or s.name)
            self._prepare(sdir, digest)
            row.update({"status": "running", "hash": digest, "started": _utc()})
            row.pop("error", None)
            self._save(m)
            self.progress(f"[{i}/{len(selected)}] {s.name}: running")
            t0 = time.perf_counter()
            try:
                summary = _jsonable(s.run(self.ctx))
            except BaseException as e:
                row.update({"status": "failed", "seconds": round(time.perf_counter() - t0, 1),
                            "error": f"{type(e).__name__}: {e}"})
                self._save(m)
                raise
            seconds = round(time.perf_counter() - t0, 1)
            row.update({"status": "done", "seconds": seconds, "finished": _utc(), "summary": summary,
                        "outputs": list(s.outputs), "peak_rss_mib": peak_rss_mib()})
            write_json(sdir / MARKER, {"hash": digest, "finished": row["finished"], "seconds": seconds,
                                       "summary": summary})
            (sdir / RUNNING).unlink(missing_ok=True)
            self._save(m)
            self.progress(f"[{i}/{len(selected)}] {s.name}: done in {seconds:.0f} s {_brief(summary)}")
        m["finished"] = _utc()
        m["seconds_this_invocation"] = round(time.perf_counter() - t_run, 1)
        m["seconds_total"] = round(sum(r.get("seconds", 0) for r in m["stages"] if r.get("status") in ("done", "skipped")), 1)
        self._save(m)
        return m

    def _prepare(self, sdir: Path, digest: str) -> None:
        """Resume in place after a kill with the same hash; otherwise start from an empty folder."""
        running = sdir / RUNNING
        if sdir.exists():
            same = running.is_file() and read_json(running).get("hash") == digest
            if not same:
                log.warning("%s: settings or inputs changed since the last attempt, starting afresh", sdir.name)
                shutil.rmtree(sdir)
        sdir.mkdir(parents=True, exist_ok=True)
        (sdir / MARKER).unlink(missing_ok=True)
        write_json(running, {"hash": digest, "started": _utc(), "pid": os.getpid()})


def _brief(summary: dict[str, Any]) -> str:
    flat = [f"{k}={v}" for k, v in summary.items() if isinstance(v, (int, float, str)) and len(str(v)) < 24]
    return ("(" + ", ".join(flat[:6]) + ")") if flat else ""


def _gpu_name() -> str | None:
    try:
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:  # noqa: BLE001 - a broken CUDA install must not stop the manifest
        return None
