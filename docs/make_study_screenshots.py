"""The observer-study screenshots of ``docs/observer_study.md``, made from phantom data only.

A 2AFC study is created from a context-encoder inference folder of phantom radiographs (``make demo`` writes one
under ``runs/demo/context_encoder/inference``), served in-process, and read in Debian's headless Chromium by
two *simulated* readers who press the arrow keys at random (seeded); then the admin opens the report of their
answers. Writes ``study_trial.png`` (a reader's first trial, fitted to the window) and ``study_report.png`` (the
admin's report page).
The report's figures are those of random key presses: the picture shows the layout, not a result.

Example::

    make demo
    .venv/bin/python docs/make_study_screenshots.py --inference runs/demo/context_encoder/inference \\
        --out docs/images
"""

from __future__ import annotations

import argparse
import random
import tempfile
import threading
from pathlib import Path

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait
from waitress import create_server

from cxr_monai.apps.study.app import create_app
from cxr_monai.apps.study.create import create_2afc_study


def chromium(window: str) -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 f"--window-size={window}"):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path="/usr/bin/chromedriver"))


def wait_answered(driver: webdriver.Chrome, answered: int) -> None:
    def ready(d: webdriver.Chrome) -> bool:
        body = d.find_element(By.TAG_NAME, "body")
        return body.get_attribute("data-state") in ("ready", "done") and body.get_attribute("data-answered") == str(
            answered)
    WebDriverWait(driver, 30, ignored_exceptions=(StaleElementReferenceException,)).until(ready)  # after a submit


def read_as(driver: webdriver.Chrome, url: str, name: str, rng: random.Random, screenshot: Path | None) -> None:
    """Log in as ``name`` and answer every showing with a random arrow key."""
    driver.get(url)
    field = driver.find_element(By.ID, "name_or_token")
    field.send_keys(name)
    field.submit()
    wait_answered(driver, 0)
    total = int(driver.find_element(By.ID, "progress").get_attribute("max"))
    for number in range(total):
        if number == 0 and screenshot is not None:
            ActionChains(driver).send_keys("f").perform()  # fit: the 128 px patches enlarged to the window
            WebDriverWait(driver, 10).until(lambda d: "fit" in d.find_element(By.ID, "stage").get_attribute("class"))
            driver.save_screenshot(str(screenshot))
        ActionChains(driver).send_keys(rng.choice([Keys.ARROW_LEFT, Keys.ARROW_RIGHT])).perform()
        wait_answered(driver, number + 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inference", required=True, type=Path, help="a context-encoder inference folder")
    parser.add_argument("--out", type=Path, default=Path("docs/images"))
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        study = Path(folder) / "study"
        create_2afc_study(args.inference, study, trials=args.trials, seed=args.seed, repeats=2,
                          title="Context encoder on phantoms: 2AFC",
                          instructions="One patch is the original, the other has an inpainted centre. "
                                       "Pick the original.")
        server = create_server(create_app(study), host="127.0.0.1", port=0)
        threading.Thread(target=server.run, daemon=True).start()
        url = f"http://127.0.0.1:{server.effective_port}/"
        rng = random.Random(args.seed)
        try:
            for name, screenshot in (("Reader A", args.out / "study_trial.png"), ("Reader B", None)):
                driver = chromium("1100,640")
                try:
                    read_as(driver, url, name, rng, screenshot)
                finally:
                    driver.quit()
            driver = chromium("1100,900")
            try:
                driver.get(url + "admin")
                field = driver.find_element(By.ID, "admin_token")
                field.send_keys((study / "admin_token").read_text().strip())
                field.submit()
                driver.get(url + "admin/report")
                WebDriverWait(driver, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, "tbody tr"))
                driver.save_screenshot(str(args.out / "study_report.png"))
            finally:
                driver.quit()
        finally:
            server.close()
    print(f"wrote {args.out / 'study_trial.png'} and {args.out / 'study_report.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
