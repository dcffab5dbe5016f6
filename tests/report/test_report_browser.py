"""The report in headless Chromium: it loads from file:// with no network, the SVG plots draw
bars of real size, and the tables the browser shows hold the run's numbers.

Needs Debian's `chromium` and `chromium-driver` and the PyPI package `selenium`; skips, saying
which is missing, when they are not installed (as tests/humaneval/test_browser.py does).
"""

from __future__ import annotations

from headless_chromium import needs_chromium

pytestmark = needs_chromium

from aloe.io import read_json
from aloe.report import render_all


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def test_report_renders_in_chromium(run_dir, browser, tmp_path):
    from selenium.webdriver.common.by import By

    page = render_all(run_dir)["report"]
    browser.get(page.as_uri())
    assert browser.execute_script("return document.readyState") == "complete"
    shot = tmp_path / "report.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    # nothing but the page itself was loaded (no CDN, fonts or scripts)
    urls = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert urls == []
    assert browser.find_elements(By.TAG_NAME, "script") == []

    # plots: every bar with a positive value has a positive drawn size
    svgs = browser.find_elements(By.CSS_SELECTOR, "svg")
    assert len(svgs) >= 3
    timed = [s for s in read_json(run_dir / "manifest.json")["stages"] if (s["seconds"] or 0) > 0]
    for sel, expect in (("#pipeline svg rect.bar", len(timed)), ("#benchmarks svg rect.bar", 20),
                        ("#safety svg rect.bar", 10)):
        bars = browser.find_elements(By.CSS_SELECTOR, sel)
        positive = [b for b in bars if float(b.get_attribute("data-value")) > 0]
        assert len(positive) >= expect, sel
        for b in positive:
            assert b.rect["width"] > 0 and b.rect["height"] > 0, (sel, b.get_attribute("data-value"), b.rect)
    # a taller bar is drawn taller: the chart scales with the numbers
    acc = {(b.get_attribute("data-series"), b.get_attribute("data-group")): b
           for b in browser.find_elements(By.CSS_SELECTOR, "#benchmarks svg rect.bar")}
    lo, hi = sorted(acc.values(), key=lambda b: float(b.get_attribute("data-value")))[::len(acc) - 1]
    assert hi.rect["height"] > lo.rect["height"]

    # tables, read through the DOM, hold the run's numbers
    def cell(key: str) -> str:
        return browser.find_element(By.CSS_SELECTOR, f'[data-key="{key}"]').text

    for label in ("base", "sft", "aligned"):
        m = read_json(run_dir / f"eval/{label}/zero-shot/metrics.json")
        for bench, b in m["benchmarks"].items():
            assert cell(f"{label}|zero-shot|{bench}|accuracy") == _pct(b["accuracy"])
            assert cell(f"{label}|zero-shot|{bench}|accuracy_ci95") == f"{_pct(b['ci95'][0])}–{_pct(b['ci95'][1])}"
    med = read_json(run_dir / "eval/aligned/strategies/metrics.json")["benchmarks"]["medqa"]["medprompt"]
    assert cell("aligned|strategies:medprompt|medqa|delta_zero_shot") == f"{100 * med['delta']:+.1f}"
    for label in ("base", "aligned"):
        s = read_json(run_dir / f"safety/{label}/metrics.json")
        assert cell(f"asr|{label}|overall|asr") == _pct(s["overall"]["asr"])
        phys = s["by_style"]["licensed_physician"]
        assert cell(f"asr|{label}|style|licensed_physician").startswith(_pct(phys["asr"]) + " (")
    assert cell("refusal|after|rate") == "75.0"
    # the escaped model name is shown as text, and did not become an element
    assert "<script>" in cell("model|sft|zero-shot")
