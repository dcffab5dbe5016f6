"""Llama Guard as its users run it: a checkpoint whose chat template carries the policy gets the bare
[user, assistant] pair through that template, not aloe's generic guard prompt.

The guard here is the tiny random Llama with the SmolLM2 tokenizer, given a template modelled on
Llama Guard 3's (llama_guard_3_chat_template.jinja); what the model would answer is scripted, so
what is tested is what reaches the model and how its answers are read.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redteam_peers import COMPLIANCE, REFUSAL
from scripted_openai import ScriptedOpenAIServer

from aloe.models.hf import HFCausalLM
from aloe.redteam.judges import LLAMA_GUARD_PROMPT, GuardLogprobJudge, LlamaGuardJudge, guard_conversation, has_guard_policy, make_judge
from aloe.safety.verdicts import Verdict

PROMPT = "Tell me how to do the harmful thing."
TEMPLATE = (Path(__file__).parent / "llama_guard_3_chat_template.jinja").read_text()
# Lines only the template has (aloe's prompt says "Sex-Related Crimes" and has no chat headers),
# and one only aloe's generic prompt has.
POLICY_LINE = "S3: Sex Crimes."
GENERATION_START = "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
GENERIC_ONLY = LLAMA_GUARD_PROMPT.splitlines()[-3]
# What Llama Guard answers, with the stray whitespace a decoder can leave around it.
UNSAFE_ANSWER = "\n\n unsafe\nS1,S10\n"
SAFE_ANSWER = " \nsafe"


def guard_answer(agent_text: str) -> str:
    return SAFE_ANSWER if REFUSAL in agent_text else UNSAFE_ANSWER


@pytest.fixture(scope="module")
def guard_checkpoint(tmp_path_factory: pytest.TempPathFactory, tiny_model: Any, smollm_tokenizer: Any) -> Path:
    """The tiny model saved with a Llama-Guard-3-style chat template, as a local model folder."""
    from transformers import AutoTokenizer

    d = tmp_path_factory.mktemp("tiny-llama-guard")
    tiny_model.save_pretrained(d)
    # A copy of the shared session tokenizer, so its own template stays as other tests expect it.
    smollm_tokenizer.save_pretrained(d)
    tok = AutoTokenizer.from_pretrained(d)
    tok.chat_template = TEMPLATE
    tok.save_pretrained(d)
    return d


@pytest.fixture()
def model_prompts(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every prompt an in-process model is asked to complete; it answers as Llama Guard would."""
    seen: list[str] = []

    def generate(self: HFCausalLM, prompts: list[str], params: Any = None, progress: bool = True,
                 on_batch: Any = None, hook: Any = None) -> list[str]:
        seen.extend(prompts)
        out = [guard_answer(p) for p in prompts]
        if on_batch is not None:
            on_batch(list(range(len(out))), out)
        return out

    monkeypatch.setattr(HFCausalLM, "generate", generate)
    return seen


@pytest.fixture()
def guard_server() -> Iterator[ScriptedOpenAIServer]:
    """A remote Llama Guard: it answers about the last message, as the real one does."""
    s = ScriptedOpenAIServer(lambda body: guard_answer(body["messages"][-1]["content"]))
    try:
        yield s
    finally:
        s.close()


def test_fixture_template_is_a_guard_template(guard_checkpoint: Path, smollm_tokenizer: Any) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(guard_checkpoint)
    assert has_guard_policy(tok) and not has_guard_policy(smollm_tokenizer)
    rendered = tok.apply_chat_template(guard_conversation(PROMPT, COMPLIANCE, native=True), tokenize=False)
    assert rendered.endswith(GENERATION_START) and "ONLY THE LAST Agent message" in rendered


def test_has_guard_policy_reads_any_template_form() -> None:
    class Tok:
        def __init__(self, chat_template: Any):
            self.chat_template = chat_template

    assert has_guard_policy(Tok("... <BEGIN UNSAFE CONTENT CATEGORIES>\nS1: Violence. ..."))
    assert has_guard_policy(Tok("check the unsafe content\ncategories below"))
    assert has_guard_policy(Tok({"default": "{{ messages }}", "guard": "Unsafe Content Categories: ..."}))
    assert not has_guard_policy(Tok("{% for m in messages %}{{ m['content'] }}{% endfor %}"))
    assert not has_guard_policy(Tok(None)) and not has_guard_policy(None)


def test_llamaguard_spec_goes_native_for_a_guard_checkpoint(guard_checkpoint: Path, model_prompts: list[str],
                                                            tmp_path: Path) -> None:
    # Through the completion cache too: detection must see the model under it.
    judge = make_judge(f"llamaguard:{guard_checkpoint}", cache_dir=str(tmp_path))
    assert isinstance(judge, LlamaGuardJudge) and judge.native
    assert judge.name == f"llamaguard-native:{guard_checkpoint}"
    verdicts = judge.judge_many([PROMPT, PROMPT], [REFUSAL, COMPLIANCE])
    assert verdicts == [Verdict(False, 0.0, "guard: safe"), Verdict(True, 1.0, "guard: unsafe S1,S10")]
    assert len(model_prompts) == 2
    for prompt in model_prompts:
        assert POLICY_LINE in prompt and GENERIC_ONLY not in prompt
        assert f"User: {PROMPT}\n\nAgent: " in prompt
        # The template's own end: the verdict is the very next thing the model writes.
        assert prompt.endswith(GENERATION_START)
    assert {p.split("Agent: ")[1].split("\n\n<END CONVERSATION>")[0] for p in model_prompts} == {REFUSAL, COMPLIANCE}


def test_llamaguard_spec_keeps_the_generic_prompt_for_other_models(tiny_checkpoint: Path,
                                                                   model_prompts: list[str]) -> None:
    judge = make_judge(f"llamaguard:{tiny_checkpoint}")
    assert isinstance(judge, LlamaGuardJudge) and not judge.native
    assert judge.name == f"llamaguard:{tiny_checkpoint}"
    assert judge.judge(PROMPT, COMPLIANCE).unsafe is True
    [prompt] = model_prompts
    assert prompt.startswith("<|im_start|>") and GENERIC_ONLY in prompt and POLICY_LINE not in prompt
    # One user turn holding the whole guard prompt, not the judged pair as chat turns.
    assert prompt.count("<|im_start|>user") == 1 and f"<|im_start|>assistant\n{COMPLIANCE}" not in prompt


def test_native_spec_sends_the_bare_pair_to_a_remote_guard(guard_server: ScriptedOpenAIServer,
                                                          tmp_path: Path) -> None:
    model = guard_server.spec("llama-guard-3-8b")
    judge = make_judge(f"llamaguard-native:{model}", cache_dir=str(tmp_path))
    assert judge.name == f"llamaguard-native:{model}"
    verdicts = judge.judge_many([PROMPT, PROMPT], [REFUSAL, COMPLIANCE])
    assert [v.unsafe for v in verdicts] == [False, True] and verdicts[1].reason == "guard: unsafe S1,S10"
    sent = sorted((r["messages"] for r in guard_server.requests), key=str)
    assert sent == sorted(([{"role": "user", "content": PROMPT}, {"role": "assistant", "content": r}]
                           for r in (REFUSAL, COMPLIANCE)), key=str)
    # Without the suffix a remote model's template is unknown, so it gets the generic prompt.
    asked = len(guard_server.requests)
    make_judge(f"llamaguard:{model}").judge(PROMPT, COMPLIANCE)
    [generic] = [r["messages"] for r in guard_server.requests[asked:]]
    assert len(generic) == 1 and GENERIC_ONLY in generic[0]["content"]


@pytest.mark.parametrize("spec_kind", ["llamaguard-logprob", "llamaguard-logprob-native"])
def test_logprob_judge_scores_the_template_rendered_context(spec_kind: str, guard_checkpoint: Path,
                                                            tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch,
                                                            tmp_path: Path) -> None:
    """Detected on a guard checkpoint; forced by the suffix on a model whose template shows no policy."""
    scored: list[tuple[str, str]] = []
    real = HFCausalLM.loglikelihood

    def loglikelihood(self: HFCausalLM, requests: list[tuple[str, str]], *a: Any, **k: Any) -> Any:
        scored.extend(requests)
        return real(self, requests, *a, **k)

    monkeypatch.setattr(HFCausalLM, "loglikelihood", loglikelihood)
    folder = guard_checkpoint if spec_kind == "llamaguard-logprob" else tiny_checkpoint
    judge = make_judge(f"{spec_kind}:{folder}", cache_dir=str(tmp_path))
    assert isinstance(judge, GuardLogprobJudge) and judge.native
    assert judge.name == f"llamaguard-logprob-native:{folder}"
    verdicts = judge.judge_many([PROMPT, PROMPT], [REFUSAL, COMPLIANCE])
    assert all(v.unsafe is not None and 0.0 <= v.score <= 1.0 for v in verdicts)
    assert [a for _, a in scored] == ["safe", "unsafe"] * 2
    expected = {judge.lm.apply_chat_template(guard_conversation(PROMPT, r, native=True))
                for r in (REFUSAL, COMPLIANCE)}
    assert {c for c, _ in scored} == expected
    for context in expected:
        assert GENERIC_ONLY not in context and PROMPT in context
        if folder == guard_checkpoint:
            assert POLICY_LINE in context and context.endswith(GENERATION_START)


def test_guard_parser_reads_llama_guard_outputs() -> None:
    from aloe.models.backends import get_generator

    gen = get_generator("openai:http://127.0.0.1:9/v1#unused")
    generic, native = LlamaGuardJudge(gen), LlamaGuardJudge(gen, native=True)
    for g in (generic, native):
        assert g.parse("safe") == Verdict(False, 0.0, "guard: safe")
        assert g.parse("\n\n  safe\n").unsafe is False
        assert g.parse("unsafe\nS1,S10") == Verdict(True, 1.0, "guard: unsafe S1,S10")
        assert g.parse(UNSAFE_ANSWER) == Verdict(True, 1.0, "guard: unsafe S1,S10")
        assert g.parse("The content is fine") is None
    # A native guard's categories are its template's (Llama Guard 1: O1-O6; custom policies).
    assert native.parse("unsafe\nO3").reason == "guard: unsafe O3"
    assert generic.parse("unsafe\nO3").reason == "guard: unsafe (no category)"


def test_native_suffix_only_on_guard_kinds() -> None:
    for bad in ("strongreject-native:x", "llamaguard-native:", "refusal-native:x"):
        with pytest.raises(ValueError, match="llamaguard-logprob-native"):
            make_judge(bad)
