import pytest

from aloe.models.generator import GenParams
from aloe.models.backends import get_generator
from aloe.safety.verdicts import RefusalJudge
from aloe.safety.prompts import load_prompts, sample_per_source
from aloe.redteam.run import run_redteam
from aloe.redteam.styles import load_styles, select_styles


@pytest.mark.slow
def test_embedded_model_red_team_run_is_cached(tmp_path):
    prompts = sample_per_source(load_prompts(), 3)
    styles = select_styles(load_styles(), ["none", "rot13"])
    gen = get_generator("embedded:smollm2-135m-instruct", cache_dir=str(tmp_path / "cache"), batch_size=6)
    m = run_redteam(prompts, styles, gen, RefusalJudge(), tmp_path / "run", GenParams(max_new_tokens=16))
    assert m["overall"]["n"] == 6 and m["overall"]["undecided"] == 0
    assert gen.misses == 6
    run_redteam(prompts, styles, gen, RefusalJudge(), tmp_path / "run2", GenParams(max_new_tokens=16))
    assert gen.misses == 6 and gen.hits == 6
