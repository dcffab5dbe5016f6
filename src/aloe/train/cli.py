"""`aloe sft`, `aloe align` and `aloe preferences`: each takes a YAML config (or a recipe, whose
`sft:` / `align:` / `preferences:` section is used) plus `--set key=value` overrides."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO_CONFIGS = Path(__file__).resolve().parents[3] / "configs" / "accelerate"


def add_parser(sub: argparse._SubParsersAction) -> None:
    for name, helptext in (("sft", "supervised fine-tuning (full / LoRA / QLoRA, packing)"),
                           ("align", "DPO in stages (stage 1 preferences, then red-team pairs)")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("config", help=f"YAML config, or a recipe with a `{name}:` section")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config field (VALUE parsed as YAML), e.g. --set max_steps=20")
        p.add_argument("--accelerate-config", metavar="NAME",
                       help="launch through `accelerate launch` with configs/accelerate/NAME.yaml (or a path)")
        p.set_defaults(func=run, stage=name)
    p = sub.add_parser("preferences", help="build stage-1 preference pairs (medical, safety, HH-RLHF)")
    p.add_argument("config", help="YAML config, or a recipe with a `preferences:` section")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.set_defaults(func=run, stage="preferences", accelerate_config=None)


def accelerate_config_path(name: str) -> Path:
    for candidate in (Path(name), Path("configs/accelerate") / f"{name}.yaml", REPO_CONFIGS / f"{name}.yaml"):
        if candidate.is_file():
            return candidate
    known = sorted(p.stem for p in REPO_CONFIGS.glob("*.yaml")) if REPO_CONFIGS.is_dir() else []
    raise FileNotFoundError(f"accelerate config {name!r} not found (known: {', '.join(known) or 'none'})")


def _settings(args: argparse.Namespace) -> Any:
    import yaml

    from aloe.train.config import AlignSettings, SFTSettings, load_section
    from aloe.train.preferences import PreferenceSettings

    model = {"sft": SFTSettings, "align": AlignSettings, "preferences": PreferenceSettings}[args.stage]
    s = load_section(args.config, args.stage, model)
    updates = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or key not in model.model_fields:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE with KEY one of {', '.join(model.model_fields)}")
        updates[key] = yaml.safe_load(value)
    return model.model_validate({**s.model_dump(), **updates})


def run(args: argparse.Namespace) -> int:
    s = _settings(args)
    if args.accelerate_config or getattr(s, "accelerate_config", None):
        cfg = accelerate_config_path(args.accelerate_config or s.accelerate_config)
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(cfg),
               "-m", "aloe.cli", args.stage, args.config, *sum((["--set", x] for x in args.set), []),
               "--set", "accelerate_config=null"]
        print("launching:", " ".join(cmd), file=sys.stderr)
        return subprocess.call(cmd, env={**os.environ})
    if args.stage == "sft":
        from aloe.train.sft import run_sft

        result = run_sft(s)
    elif args.stage == "align":
        from aloe.train.align import run_align

        result = run_align(s)
    else:
        from aloe.train.preferences import build_preferences

        result = build_preferences(s)
    print(json.dumps(result, indent=2, default=str))
    return 0
