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
from aloe.models.precision import add_policy_args


def add_parser(sub: argparse._SubParsersAction) -> None:
    for name, helptext in (("sft", "supervised fine-tuning (full / LoRA / QLoRA, packing)"),
                           ("align", "DPO in stages (stage 1 preferences, then red-team pairs)")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("config", help=f"YAML config, or a recipe with a `{name}:` section")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config field (VALUE parsed as YAML), e.g. --set max_steps=20")
        p.add_argument("--accelerate-config", metavar="NAME",
                       help="launch through `accelerate launch` with a packaged config "
                            "(ddp, fsdp, zero3: aloe/configs/accelerate/NAME.yaml) or a path to one")
        p.set_defaults(func=run, stage=name)
    p = sub.add_parser("preferences", help="build stage-1 preference pairs (medical, safety, HH-RLHF)")
    p.add_argument("config", help="YAML config, or a recipe with a `preferences:` section")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    add_policy_args(p)
    p.set_defaults(func=run, stage="preferences", accelerate_config=None)


def packaged_accelerate_configs() -> dict[str, Path]:
    """The accelerate configs shipped in aloe.configs, by name."""
    from importlib.resources import files

    # aloe is installed as files on disk (setuptools, regular or editable), so the resources are
    # real paths that `accelerate launch --config_file` can open
    folder = files("aloe.configs").joinpath("accelerate")
    return {p.name.removesuffix(".yaml"): Path(str(p)) for p in folder.iterdir() if p.name.endswith(".yaml")}


def accelerate_config_path(name: str) -> Path:
    """A path to a user's config file, else the packaged config called `name` (`ddp`, `fsdp`, `zero3`)."""
    if Path(name).is_file():
        return Path(name)
    packaged = packaged_accelerate_configs()
    if name in packaged:
        return packaged[name]
    raise FileNotFoundError(f"accelerate config {name!r} not found: no such file, and no packaged config of that "
                            f"name (known: {', '.join(sorted(packaged))})")


def _settings(args: argparse.Namespace) -> Any:
    import yaml

    from aloe.io import load_section
    from aloe.train.config import AlignSettings, SFTSettings
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
        import torch

        env = dict(os.environ)
        if not torch.cuda.is_available():
            # Without it, processes started by accelerate's multi-process launcher on a machine with
            # no GPU each train alone on all the data (DistributedType.NO); with it, the Trainer joins
            # them over gloo (DistributedType.MULTI_CPU)
            env.setdefault("ACCELERATE_USE_CPU", "true")
        print("launching:", " ".join(cmd), file=sys.stderr)
        return subprocess.call(cmd, env=env)
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
