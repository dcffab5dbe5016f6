"""Headless Chromium for the browser tests (the human-eval page, the report).

Loaded as a plugin by tests/conftest.py, so `browser` is a fixture everywhere. Needs Debian's
`chromium` and `chromium-driver` and the PyPI package `selenium`; a module that sets
`pytestmark = needs_chromium` skips, saying which is missing, without them.
"""

from __future__ import annotations

import shutil

import pytest

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
needs_chromium = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                                    reason="needs Debian packages chromium and chromium-driver "
                                           "(apt-get install -y chromium chromium-driver)")


@pytest.fixture()
def browser(tmp_path):
    pytest.importorskip("selenium", reason="needs `pip install selenium` to drive Chromium")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--window-size=1280,2000", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'chrome-profile'}"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()
