"""The observer study in a real browser: Debian's headless Chromium, driven by Selenium, against the served app.

A reader logs in, answers with the keyboard, pauses, windows an image, reloads midway, answers while the server is
down (the answer waits in the page and lands when the server is back), finishes; the report counts exactly the
answers given. Skipped where ``/usr/bin/chromium`` and ``/usr/bin/chromedriver`` are not installed (``make test``
installs them on Debian as root). With ``CXR_MONAI_SCREENSHOTS=<folder>`` the trial, admin and report pages are
saved there as PNGs.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)),
                       reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)"),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """``python -m cxr_monai study serve`` in a subprocess, as a user starts it; stop() and start() again."""

    def __init__(self, study: Path, log: Path) -> None:
        self.study, self.log, self.port = study, log, free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log, "a") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "cxr_monai", "study", "serve", "--study",
                                             str(self.study), "--port", str(self.port)], cwd=REPO, stdout=log,
                                            stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"the server exited: {self.log.read_text()[-2000:]}")
            try:
                urllib.request.urlopen(self.url, timeout=2).close()
                return
            except OSError:
                time.sleep(0.2)
        pytest.fail(f"the server did not answer within 60 s: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=20)


@pytest.fixture
def browser(tmp_path):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-quic", "--window-size=1280,900", f"--user-data-dir={tmp_path / 'chromium'}"):
        options.add_argument(flag)
    service = webdriver.ChromeService(executable_path=CHROMEDRIVER)
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def wait_for(driver, state: str, answered: int | None = None, timeout: float = 30):
    def ready(d):
        body = d.find_element(By.TAG_NAME, "body")
        return body.get_attribute("data-state") == state and (
            answered is None or body.get_attribute("data-answered") == str(answered))
    # the body found may belong to the page a form submit is leaving: look again, as for any other miss
    WebDriverWait(driver, timeout, ignored_exceptions=(StaleElementReferenceException,)).until(
        ready, message=f"page never reached state {state} with {answered} answers")


def press(driver, key: str) -> None:
    ActionChains(driver).send_keys(key).perform()


def log_in(driver, url: str, name: str) -> None:
    driver.get(url)
    field = driver.find_element(By.ID, "name_or_token")
    field.send_keys(name)
    field.submit()


def screenshot(driver, name: str) -> None:
    folder = os.environ.get("CXR_MONAI_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(folder) / name))


def test_a_reader_completes_a_2afc_study_with_keys(tmp_path, browser, hand_made_study):
    from selenium.webdriver.common.keys import Keys

    study = hand_made_study(tmp_path / "study", trials=6, repeats=1, size=160)
    server = Server(study, tmp_path / "server.log")
    server.start()
    try:
        log_in(browser, server.url, "R1")
        wait_for(browser, "ready", 0)
        total = int(browser.find_element(By.ID, "progress").get_attribute("max"))
        assert total == 7
        screenshot(browser, "study_trial.png")
        pressed = []

        def answer(key: str) -> None:
            press(browser, key)
            pressed.append("left" if key == Keys.ARROW_LEFT else "right")
            wait_for(browser, "ready" if len(pressed) < total else "done", len(pressed))

        answer(Keys.ARROW_LEFT)
        answer(Keys.ARROW_RIGHT)
        # pausing hides the images and stops the clock; answer keys do nothing meanwhile
        press(browser, "p")
        wait_for(browser, "paused", 2)
        assert browser.find_element(By.ID, "paused").is_displayed()
        press(browser, Keys.ARROW_LEFT)
        time.sleep(0.5)
        assert browser.find_element(By.TAG_NAME, "body").get_attribute("data-answered") == "2"
        press(browser, "p")
        wait_for(browser, "ready", 2)
        # window/level by dragging on an image, reset with 0
        body = browser.find_element(By.TAG_NAME, "body")
        initial = body.get_attribute("data-window")
        ActionChains(browser).click_and_hold(browser.find_element(By.ID, "slot-left")).move_by_offset(60, 30) \
            .release().perform()
        WebDriverWait(browser, 10).until(lambda d: body.get_attribute("data-window") != initial,
                                         message="dragging on an image did not change the window")
        press(browser, "0")
        assert body.get_attribute("data-window") == initial
        answer(Keys.ARROW_LEFT)
        # a reload midway continues at the next showing
        browser.refresh()
        wait_for(browser, "ready", 3)
        # the server stops: the answer waits in the page and is sent when the server is back
        server.stop()
        press(browser, Keys.ARROW_RIGHT)
        pressed.append("right")
        WebDriverWait(browser, 30).until(lambda d: "retrying" in d.find_element(By.ID, "status").text)
        server.start()
        wait_for(browser, "ready", 4)
        answer(Keys.ARROW_LEFT)
        answer(Keys.ARROW_LEFT)
        answer(Keys.ARROW_RIGHT)
        assert browser.find_element(By.ID, "done").is_displayed()
        # the admin page, behind its token
        browser.get(server.url + "admin")
        field = browser.find_element(By.ID, "admin_token")
        field.send_keys("admin-secret-token")
        field.submit()
        WebDriverWait(browser, 20).until(lambda d: d.find_elements(By.ID, "readers"))
        assert "7 / 7" in browser.find_element(By.ID, "readers").text
        screenshot(browser, "study_admin.png")
        browser.find_element(By.ID, "report-link").click()
        # the admin page has table rows too: wait for the report page's own
        WebDriverWait(browser, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, "body.report tbody tr"))
        first_row = [cell.text for cell in browser.find_elements(By.CSS_SELECTOR, "body.report tbody tr")[0]
                     .find_elements(By.TAG_NAME, "td")]
        screenshot(browser, "study_report.png")
    finally:
        server.stop()

    from cxr_monai.apps.study.store import StudyStore

    store = StudyStore(study)
    answers = store.answers()
    assert [a["choice"] for a in answers] == pressed
    schedule = store.schedule("R1")
    expected_correct = sum(side == shown.original_side for side, shown in zip(pressed, schedule) if not shown.repeat)
    report_dir = tmp_path / "report"
    result = subprocess.run([sys.executable, "-m", "cxr_monai", "study", "report", "--study", str(study), "--out",
                             str(report_dir), "--mlflow-uri", "none"], capture_output=True, text=True, cwd=REPO,
                            timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((report_dir / "report.json").read_text())
    assert _reader_correct(report, "R1") == expected_correct
    assert first_row[:3] == ["R1", "6", str(expected_correct)]  # the admin's report page showed the same
    assert all(a["response_ms"] > 0 for a in answers)


def _reader_correct(report: dict, reader: str) -> int:
    """The number of correct first answers of ``reader`` in report.json."""
    return int(report["accuracy"]["readers"][reader]["successes"])


def test_a_reader_answers_real_or_synthetic_with_the_mouse(tmp_path, browser, hand_made_study):
    study = hand_made_study(tmp_path / "study", design="real_or_synthetic", trials=4, repeats=0, size=96)
    server = Server(study, tmp_path / "server.log")
    server.start()
    try:
        log_in(browser, server.url, "R2")
        wait_for(browser, "ready", 0)
        clicks = ["real", "synthetic", "real", "real"]
        for number, choice in enumerate(clicks, start=1):
            browser.find_element(By.CSS_SELECTOR, f"button.answer[data-choice={choice}]").click()
            wait_for(browser, "ready" if number < len(clicks) else "done", number)
    finally:
        server.stop()
    from cxr_monai.apps.study.store import StudyStore

    assert [a["choice"] for a in StudyStore(study).answers()] == clicks
