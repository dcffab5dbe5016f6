"""Merge checkpoints tensor by tensor over safetensors.

For each tensor name, one tensor per model is read, merged and streamed to the output; peak memory
stays near (number of models + 1) x the largest tensor, never whole models. Before any work, the
models' architectures, tensor names and shapes, and tokenizers are compared, and a mismatch is a
clear error. The output folder is written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from tqdm import tqdm

from aloe.io import atomic_dir, read_json, write_json
from aloe.merge.methods import get_method
from aloe.merge.safetensors_stream import DTYPES, SafetensorsReader, SafetensorsWriter
from aloe.models.loading import resolve_weights

log = logging.getLogger(__name__)

COMPLETE_MARKER = "aloe-merge.json"
# Files copied from the reference model so the output loads like any checkpoint.
SIDE_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
              "special_tokens_map.json", "chat_template.jinja", "tokenizer.model", "vocab.json", "merges.txt")
# config.json fields that must agree for tensors of the same name to mean the same thing.
ARCH_FIELDS = ("architectures", "model_type", "hidden_size", "num_hidden_layers", "num_attention_heads",
               "num_key_value_heads", "intermediate_size", "vocab_size", "tie_word_embeddings")


class MergeInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str
    weight: float = 1.0
    density: float = Field(1.0, ge=0.0, le=1.0)


class MergeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    method: str = "dare_ties"
    base_model: str | None = None
    models: list[MergeInput]
    parameters: dict[str, float | bool] = Field(default_factory=dict)  # t (slerp), normalize, lam
    dtype: str | None = None  # output dtype; default: the reference model's per tensor
    seed: int = 0  # DARE's random drops are seeded per tensor from this

    @model_validator(mode="after")
    def _known_method_and_parameters(self) -> MergeConfig:
        method = get_method(self.method)
        unknown = sorted(set(self.parameters) - set(method.parameters))
        if unknown:
            raise ValueError(f"parameters: unknown key(s) {', '.join(unknown)} for method {self.method}; "
                             f"allowed: {', '.join(method.parameters)}")
        return self


def _shards(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(read_json(index)["weight_map"].values()))
        return [folder / f for f in files]
    single = folder / "model.safetensors"
    if not single.is_file():
        raise FileNotFoundError(f"{folder}: no model.safetensors (or index); only safetensors checkpoints can be merged")
    return [single]


class Checkpoint:
    """A model folder's tensors by name, read lazily from its shards."""

    def __init__(self, spec: str):
        self.spec = spec
        self.folder = Path(resolve_weights(spec))
        if not self.folder.is_dir():
            raise FileNotFoundError(f"merge input {spec!r} is not a local checkpoint folder")
        self.config = read_json(self.folder / "config.json")
        self.readers = [SafetensorsReader(p) for p in _shards(self.folder)]
        self.where = {name: r for r in self.readers for name in r.tensors}

    def shape(self, name: str) -> tuple[int, ...]:
        return self.where[name].tensors[name].shape

    def read(self, name: str) -> torch.Tensor:
        return self.where[name].read(name)


def _tokenizer_vocab(folder: Path) -> tuple[dict[str, int], list[str]] | None:
    path = folder / "tokenizer.json"
    if not path.is_file():
        return None
    tok = read_json(path)
    return tok["model"].get("vocab") or {}, [t["content"] for t in tok.get("added_tokens", [])]


def check_compatible(ref: Checkpoint, others: list[Checkpoint]) -> None:
    """Raise ValueError naming the first field, tensor or token on which the models disagree."""
    ref_vocab = _tokenizer_vocab(ref.folder)
    for other in others:
        for field in ARCH_FIELDS:
            a, b = ref.config.get(field), other.config.get(field)
            if a != b:
                raise ValueError(f"architectures differ: config.json field {field!r} is {a!r} in {ref.spec} "
                                 f"but {b!r} in {other.spec}")
        missing = sorted(set(ref.where) - set(other.where))
        extra = sorted(set(other.where) - set(ref.where))
        if missing or extra:
            raise ValueError(f"tensor names differ between {ref.spec} and {other.spec}: "
                             f"missing in the second {missing[:5]}, only in the second {extra[:5]}")
        for name in ref.where:
            if ref.shape(name) != other.shape(name):
                raise ValueError(f"tensor {name!r} has shape {list(ref.shape(name))} in {ref.spec} "
                                 f"but {list(other.shape(name))} in {other.spec}")
        vocab = _tokenizer_vocab(other.folder)
        if ref_vocab is not None and vocab is not None and vocab != ref_vocab:
            diff = sorted(set(ref_vocab[0].items()) ^ set(vocab[0].items()))[:3]
            raise ValueError(f"tokenizers differ between {ref.spec} ({len(ref_vocab[0])} tokens, "
                             f"{len(ref_vocab[1])} added) and {other.spec} ({len(vocab[0])} tokens, "
                             f"{len(vocab[1])} added); first differing entries: {diff}")


def _tensor_seed(seed: int, name: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{name}".encode()).digest()[:8], "little") & (2**63 - 1)


def merge_checkpoints(cfg: MergeConfig, out_dir: str | Path) -> Path:
    """Merge per `cfg` into `out_dir` (skipped when a completed merge with the same config is there)."""
    out = Path(out_dir)
    marker = out / COMPLETE_MARKER
    if marker.is_file() and read_json(marker).get("config") == cfg.model_dump():
        log.info("merge already complete in %s", out)
        return out
    method = get_method(cfg.method)
    if method.needs_base and not cfg.base_model:
        raise ValueError(f"merge method {cfg.method!r} needs base_model")
    if not cfg.models:
        raise ValueError("merge: models is empty")
    base = Checkpoint(cfg.base_model) if cfg.base_model else None
    inputs = [Checkpoint(m.model) for m in cfg.models]
    ref = base or inputs[0]
    check_compatible(ref, [c for c in inputs if c is not ref])
    params = dict(cfg.parameters)
    weights = [m.weight for m in cfg.models]
    densities = [m.density for m in cfg.models]
    out_dtype = DTYPES.get(cfg.dtype.upper()) if cfg.dtype else None
    if cfg.dtype and out_dtype is None:
        raise ValueError(f"merge dtype {cfg.dtype!r}: expected one of {', '.join(DTYPES)}")

    with atomic_dir(out) as tmp:
        total = sum(len(r.tensors) for r in ref.readers)
        with tqdm(total=total, desc=f"merge {cfg.method}", unit="tensor") as bar:
            for reader in ref.readers:
                names = list(reader.tensors)
                layout = []
                for n in names:
                    src = DTYPES[reader.tensors[n].dtype]
                    layout.append((n, out_dtype if out_dtype and src.is_floating_point else src, reader.tensors[n].shape))
                writer = SafetensorsWriter(tmp / reader.path.name, layout, reader.metadata)
                for name, dtype, _ in layout:
                    ref_t = reader.read(name)
                    if not ref_t.is_floating_point():
                        merged = ref_t  # integer buffers (e.g. position ids) are copied, not averaged
                    else:
                        gen = torch.Generator().manual_seed(_tensor_seed(cfg.seed, name)) if method.random else None
                        merged = method.fn(
                            base.read(name) if base else None, [c.read(name) for c in inputs],
                            weights=weights, densities=densities, generator=gen, **params,
                        )
                    writer.add(name, merged.to(dtype))
                    del merged, ref_t
                    bar.update(1)
                writer.close()
        for f in SIDE_FILES + ("model.safetensors.index.json",):
            if (ref.folder / f).is_file():
                shutil.copy2(ref.folder / f, tmp / f)
        if out_dtype is not None:
            config = read_json(tmp / "config.json")
            config["dtype"] = str(out_dtype).removeprefix("torch.")
            write_json(tmp / "config.json", config)
        write_json(tmp / COMPLETE_MARKER, {"config": cfg.model_dump(), "reference": str(ref.folder)})
    return out


def load_merge_config(path: str | Path) -> MergeConfig:
    """A merge YAML file, or a recipe whose `merge:` section is used."""
    from aloe.io import load_section

    return load_section(path, "merge", MergeConfig)
