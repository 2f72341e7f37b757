"""Headless Debian Chromium driven by selenium, for the web view's tests and benchmark.

Selenium gets Debian's chromium and chromedriver explicitly (its driver manager cannot
download anything here); `.ci/run` installs them with apt-get. Missing: a clear error,
never a skip."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--disable-background-networking", "--disable-component-update", "--no-first-run",
         "--disable-renderer-backgrounding", "--disable-background-timer-throttling",
         "--disable-backgrounding-occluded-windows", "--hide-scrollbars")
READ_TEXT = "const e = document.getElementById(arguments[0]); return e ? e.textContent : null;"


class Browser:
    """One headless Chromium with a fresh profile; `close()` removes the profile."""

    def __init__(self, width: int = 1250, height: int = 1700):
        try:
            from selenium import webdriver
            from selenium.webdriver.chrome.options import Options
            from selenium.webdriver.chrome.service import Service
        except ImportError as exc:
            raise RuntimeError("selenium is not installed: pip install 'peakstream[test]'"
                               ) from exc
        for path in (CHROMIUM, CHROMEDRIVER):
            if not Path(path).exists():
                raise RuntimeError(f"{path} is missing: apt-get install -y chromium "
                                   f"chromium-driver (.ci/run does this)")
        self.profile = tempfile.mkdtemp(prefix="peakstream-chromium-")
        opts = Options()
        opts.binary_location = CHROMIUM
        for flag in (*FLAGS, f"--window-size={width},{height}",
                     f"--user-data-dir={self.profile}"):
            opts.add_argument(flag)
        self.driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)

    def open(self, url: str) -> None:
        self.driver.get(url)

    def text(self, element_id: str) -> str | None:
        """The text of a header element by its id (None while the page has none)."""
        return self.driver.execute_script(READ_TEXT, element_id)

    def wait_for(self, element_id: str, test, timeout: float = 180.0) -> str:
        """Wait (selenium's event wait) until test(text of the element) holds; the text."""
        from selenium.common.exceptions import TimeoutException
        from selenium.webdriver.support.ui import WebDriverWait

        try:
            WebDriverWait(self.driver, timeout, poll_frequency=0.1).until(
                lambda _: (t := self.text(element_id)) is not None and test(t))
        except TimeoutException:
            raise AssertionError(f"the page's #{element_id} never passed the test; it says "
                                 f"{self.text(element_id)!r}") from None
        return self.text(element_id)

    def screenshot(self, path: Path) -> None:
        self.driver.save_screenshot(str(path))

    def close(self) -> None:
        try:
            self.driver.quit()
        finally:
            shutil.rmtree(self.profile, ignore_errors=True)
