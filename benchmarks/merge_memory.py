"""Peak memory of merging two real checkpoints: aloe's tensor-by-tensor merger vs mergekit.

Merges the embedded SmolLM2-135M with a perturbed copy of itself (every weight + 1% of its
tensor's std in Gaussian noise, a stand-in for a fine-tuned model) with each method, in a fresh
process per merge, and prints peak RSS against the checkpoint size, wall time, and, for the
deterministic methods, the largest difference between aloe's and mergekit's merged weights.
mergekit is run from `--mergekit` (a `mergekit-yaml` executable; skipped when absent), e.g. from a
separate venv: python -m venv --system-site-packages /tmp/mkvenv && /tmp/mkvenv/bin/pip install mergekit==0.1.5

    nice -n 10 python benchmarks/merge_memory.py --mergekit /tmp/mkvenv/bin/mergekit-yaml
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

from aloe.merge.merger import SIDE_FILES
from aloe.merge.safetensors_stream import DTYPES, SafetensorsReader, SafetensorsWriter
from aloe.models.loading import resolve_weights

MEASURE = ("import resource, subprocess, sys; rc = subprocess.call(sys.argv[1:]); "
           "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(rc)")


def peak_rss_mib(cmd: list[str]) -> tuple[float, float]:
    """(peak RSS of `cmd` in MiB, seconds), measured in a fresh wrapper so only `cmd` counts."""
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", MEASURE, *cmd], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed: {out.stderr[-2000:]}")
    return int(out.stdout.strip().splitlines()[-1]) / 1024, time.perf_counter() - t0


def perturbed_copy(base: Path, dst: Path, scale: float = 0.01) -> Path:
    if (dst / "model.safetensors").is_file():
        return dst
    dst.mkdir(parents=True, exist_ok=True)
    reader = SafetensorsReader(base / "model.safetensors")
    layout = [(n, DTYPES[i.dtype], i.shape) for n, i in reader.tensors.items()]
    writer = SafetensorsWriter(dst / "model.safetensors", layout, reader.metadata)
    g = torch.Generator().manual_seed(0)
    for name, _, _ in layout:
        t = reader.read(name)
        writer.add(name, t + scale * t.float().std() * torch.randn(t.shape, generator=g) if t.numel() > 1 else t)
    writer.close()
    for f in SIDE_FILES:
        if (base / f).is_file():
            shutil.copy2(base / f, dst / f)
    return dst


def max_diff(a: Path, b: Path) -> float:
    ra, rb = SafetensorsReader(a / "model.safetensors"), SafetensorsReader(b / "model.safetensors")
    return max(float((ra.read(n).float() - rb.read(n).float()).abs().max()) for n in ra.tensors)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="embedded:smollm2-135m-instruct")
    p.add_argument("--work", default="/tmp/aloe-merge-bench")
    p.add_argument("--methods", nargs="*", default=["linear", "ties", "dare_ties"])
    p.add_argument("--mergekit", default=shutil.which("mergekit-yaml"))
    args = p.parse_args()
    work = Path(args.work)
    base = Path(resolve_weights(args.model))
    tuned = perturbed_copy(base, work / "tuned")
    size_mib = (base / "model.safetensors").stat().st_size / 2**20
    idle, _ = peak_rss_mib([sys.executable, "-c", "import torch, aloe.merge.merger"])
    print(f"checkpoint: {size_mib:.0f} MiB per model (2 models in); python + torch imported alone: {idle:.0f} MiB peak")
    print(f"{'method':16s} {'aloe MiB':>9s} {'aloe/ckpt':>9s} {'aloe s':>7s} {'mergekit MiB':>13s} {'mergekit s':>10s} "
          f"{'mk/aloe':>8s} {'max |diff|':>10s}")
    for method in args.methods:
        params = {"t": 0.5} if method == "slerp" else {}
        aloe_cfg = {"method": method, "models": [{"model": str(tuned), "weight": 1.0, "density": 0.5}],
                    "parameters": params}
        mk_cfg = {"merge_method": method, "dtype": "float32",
                  "models": [{"model": str(tuned), "parameters": {"weight": 1.0, "density": 0.5}}]}
        if method == "linear":
            aloe_cfg["models"].insert(0, {"model": str(base), "weight": 1.0})
            mk_cfg["models"].insert(0, {"model": str(base), "parameters": {"weight": 1.0}})
        else:
            aloe_cfg["base_model"] = str(base)
            mk_cfg["base_model"] = str(base)
            mk_cfg["models"].insert(0, {"model": str(base)})
        (work / f"{method}.aloe.yaml").write_text(yaml.safe_dump(aloe_cfg))
        (work / f"{method}.mk.yaml").write_text(yaml.safe_dump(mk_cfg))
        for d in ("aloe", "mk"):
            shutil.rmtree(work / f"out-{method}-{d}", ignore_errors=True)
        rss, secs = peak_rss_mib([sys.executable, "-m", "aloe.cli", "merge", str(work / f"{method}.aloe.yaml"),
                                  "-o", str(work / f"out-{method}-aloe")])
        mk = "n/a"
        if args.mergekit:
            mk_rss, mk_secs = peak_rss_mib([args.mergekit, str(work / f"{method}.mk.yaml"),
                                            str(work / f"out-{method}-mk"), "--quiet"])
            diff = max_diff(work / f"out-{method}-aloe", work / f"out-{method}-mk") if method != "dare_ties" else None
            mk = (f"{mk_rss:13.0f} {mk_secs:10.1f} {mk_rss / rss:7.2f}x "
                  + (f"{diff:10.2e}" if diff is not None else f"{'random':>10s}"))
        print(f"{method:16s} {rss:9.0f} {rss / size_mib:8.2f}x {secs:7.1f} {mk}")
    print(json.dumps({"note": "RSS includes the interpreter and torch; see the import-only line above"}))


if __name__ == "__main__":
    main()
