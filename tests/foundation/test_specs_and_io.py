import gzip
import json

import pytest

from aloe.io import RecordError, atomic_open, iter_jsonl, write_jsonl
from aloe.models.spec import parse_model_spec


@pytest.mark.parametrize("spec,kind,target,name", [
    ("embedded:smollm2-135m-instruct", "embedded", "smollm2-135m-instruct", None),
    ("hf:meta-llama/Llama-3.1-8B-Instruct", "hub", "meta-llama/Llama-3.1-8B-Instruct", None),
    ("HPAI-BSC/Llama3.1-Aloe-Beta-8B", "hub", "HPAI-BSC/Llama3.1-Aloe-Beta-8B", None),
    ("vllm:/models/llama", "vllm", "/models/llama", None),
    ("openai:http://127.0.0.1:8000/v1#teacher", "openai", "http://127.0.0.1:8000/v1", "teacher"),
])
def test_parse_model_spec(spec, kind, target, name):
    s = parse_model_spec(spec)
    assert (s.kind, s.target, s.served_name) == (kind, target, name)


def test_local_folder_spec(tmp_path):
    assert parse_model_spec(str(tmp_path)).kind == "local"


@pytest.mark.parametrize("bad", ["", "openai:http://x/v1", "openai:ftp://x#m", "no such thing"])
def test_bad_specs_are_rejected(bad):
    with pytest.raises(ValueError):
        parse_model_spec(bad)


def test_unknown_embedded_model_is_a_clear_error():
    from aloe.models.embedded import gguf_path

    with pytest.raises(ValueError, match="unknown embedded model 'nope'"):
        gguf_path("nope")


def test_pickle_checkpoints_are_refused(tmp_path, tiny_model, smollm_tokenizer):
    import torch

    from aloe.models.loading import load_causal_lm

    tiny_model.save_pretrained(tmp_path)
    smollm_tokenizer.save_pretrained(tmp_path)
    # the same weights as a pickle, the only format there
    torch.save(tiny_model.state_dict(), tmp_path / "pytorch_model.bin")
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(OSError, match="could not load model"):
        load_causal_lm(str(tmp_path))


def test_atomic_write_leaves_old_file_when_interrupted(tmp_path):
    p = tmp_path / "out.jsonl"
    write_jsonl(p, [{"a": 1}])
    with pytest.raises(RuntimeError), atomic_open(p) as f:
        f.write('{"a": 2}\n')
        raise RuntimeError("crash mid-write")
    assert [r for _, r in iter_jsonl(p)] == [{"a": 1}]
    assert [x.name for x in tmp_path.iterdir()] == ["out.jsonl"]  # no temp file left behind


def test_jsonl_gz_roundtrip_and_errors(tmp_path):
    p = tmp_path / "x.jsonl.gz"
    write_jsonl(p, [{"a": 1}, {"b": 2}])
    with gzip.open(p, "rt") as f:
        assert [json.loads(line) for line in f] == [{"a": 1}, {"b": 2}]
    q = tmp_path / "bad.jsonl"
    q.write_text('{"a": 1}\n\n[1, 2]\n')
    with pytest.raises(RecordError, match=r"bad\.jsonl:3: expected a JSON object"):
        list(iter_jsonl(q))


def test_completion_cache_keys_change_when_weights_are_retrained_in_place(tiny_model, smollm_tokenizer, tmp_path):
    """A model retrained into the same folder must not be served its predecessor's cached answers."""
    import torch

    from aloe.models.generator import GenParams
    from aloe.models.backends import get_generator

    folder = tmp_path / "model"
    tiny_model.save_pretrained(folder)
    smollm_tokenizer.save_pretrained(folder)
    conv = [[{"role": "user", "content": "What is anaemia?"}]]
    params = GenParams(max_new_tokens=4)
    first = get_generator(str(folder), cache_dir=str(tmp_path / "cache"))
    first.chat(conv, params)
    again = get_generator(str(folder), cache_dir=str(tmp_path / "cache"))
    again.chat(conv, params)
    assert (again.hits, again.misses) == (1, 0)
    with torch.no_grad():
        retrained = type(tiny_model)(tiny_model.config)
    retrained.save_pretrained(folder)  # same path, new weights
    after = get_generator(str(folder), cache_dir=str(tmp_path / "cache"))
    after.chat(conv, params)
    assert (after.hits, after.misses) == (0, 1)
