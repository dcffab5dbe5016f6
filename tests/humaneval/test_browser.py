"""The comparison page driven in headless Chromium: a rater's link, vote, reload, resume; stored votes match the clicks.

Needs Debian's `chromium` and `chromium-driver` (/usr/bin/chromium, /usr/bin/chromedriver) and the
PyPI package `selenium`; the test skips, saying which is missing, when they are not installed.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
from headless_chromium import needs_chromium

pytestmark = needs_chromium

from aloe.humaneval.app import make_server, serve_in_thread
from aloe.humaneval.results import summarize_votes
from aloe.humaneval.store import Store, read_comparisons

MODELS = ("alpha", "beta", "gamma")


@pytest.fixture()
def app(tmp_path):
    data = tmp_path / "answers.jsonl"
    with data.open("w") as f:
        for q in range(3):
            f.write(json.dumps({"id": f"q{q}", "question": f"Question {q}: what is the dose of drug {q}?",
                                "answers": {m: f"[{m}] answer to question {q}." for m in MODELS}}) + "\n")
    store = Store(tmp_path / "votes.sqlite")
    assert store.load(read_comparisons(data)) == 9  # 3 questions x 3 pairs of models
    token = store.add_rater("Dr Ada")
    server = make_server(store)
    serve_in_thread(server)
    yield f"http://127.0.0.1:{server.server_address[1]}", store, token
    server.shutdown()
    server.server_close()
    store.close()


def _wait(driver, predicate, timeout=15):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(lambda d: predicate(d))


def _model_of(text: str) -> str:
    return text.split("]")[0].strip("[")


def _vote_on_screen(driver, clicks, done_before):
    """Vote by a fixed rule on what is shown; remember which model each click favoured."""
    from selenium.webdriver.common.by import By

    _wait(driver, lambda d: d.find_element(By.ID, "progress").get_attribute("data-done") == str(done_before))
    a = _model_of(driver.find_element(By.ID, "answer-A").text)
    b = _model_of(driver.find_element(By.ID, "answer-B").text)
    task_id = driver.find_element(By.TAG_NAME, "body").get_attribute("data-task-id")
    # Rule: alpha always wins; beta vs gamma is a tie; gamma's answers are flagged unsafe.
    if "alpha" in (a, b):
        choice, winner = ("A", a) if a == "alpha" else ("B", b)
    else:
        choice, winner = "tie", None
    for side, model in (("A", a), ("B", b)):
        if model == "gamma":
            driver.find_element(By.ID, f"flag-{side}-unsafe").click()
    clicks.append({"task_id": task_id, "model_a": a, "model_b": b, "choice": choice, "winner": winner})
    driver.find_element(By.ID, f"vote-{choice}").click()


def test_rater_votes_reloads_resumes_and_results_match(app, browser):
    from selenium.webdriver.common.by import By

    base, store, token = app
    browser.get(f"{base}/?token={token}")  # the link the organiser sent: no name to type
    _wait(browser, lambda d: d.find_element(By.ID, "rater-name").text == "Dr Ada")
    clicks: list[dict] = []
    for i in range(4):
        _vote_on_screen(browser, clicks, done_before=i)
    _wait(browser, lambda d: d.find_element(By.ID, "progress").get_attribute("data-done") == "4")

    browser.refresh()  # the session resumes: the count and the next unseen pair
    _wait(browser, lambda d: d.find_element(By.ID, "progress").get_attribute("data-done") == "4")
    assert "4 of 9 done" in browser.find_element(By.ID, "progress").text
    for i in range(4, 9):
        _vote_on_screen(browser, clicks, done_before=i)
    _wait(browser, lambda d: d.find_element(By.ID, "finished").is_displayed())

    # Each pair exactly once, and the database holds exactly what was clicked.
    votes = store.votes()
    assert len({c["task_id"] for c in clicks}) == 9
    assert [(v["task_id"], v["model_a"], v["model_b"], v["choice"], v["winner"]) for v in votes] == \
           [(c["task_id"], c["model_a"], c["model_b"], c["choice"], c["winner"]) for c in clicks]
    assert all(v["rater"] == "dr ada" and v["created_at"] for v in votes)  # the rater's case-folded identity
    for v in votes:
        assert v["flags"] == {m: ["unsafe"] if m == "gamma" else [] for m in (v["model_a"], v["model_b"])}
    # Which side each model takes is random per database, so 6 pairs prove nothing about balance:
    # test_hardening.py checks it over hundreds of tasks.

    s = summarize_votes(votes)
    assert s["win_rates"]["alpha"]["win_rate"] == 1.0 and s["win_rates"]["alpha"]["n"] == 6
    assert s["win_rates"]["beta"]["win_rate"] == pytest.approx((0 * 3 + 0.5 * 3) / 6)
    assert s["win_rates"]["gamma"]["win_rate"] == pytest.approx(0.25)
    assert s["flags"]["gamma"] == {"unsafe": 6}
    assert next(iter(s["bradley_terry"])) == "alpha"


def test_requests_without_the_token_are_refused(app, browser):
    from selenium.webdriver.common.by import By

    base, store, _ = app
    for url in (f"{base}/", f"{base}/?token=wrong", f"{base}/api/next"):
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(url, timeout=10)
        assert e.value.code == 401
    vote = {"task_id": store.next_task("Dr Ada")[0].id, "choice": "A"}
    req = urllib.request.Request(f"{base}/api/vote", data=json.dumps(vote).encode(),
                                 headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    assert e.value.code == 401
    browser.get(f"{base}/")
    assert "access token" in browser.find_element(By.TAG_NAME, "body").text
    assert store.votes() == []
