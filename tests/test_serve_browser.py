"""The web page of `segformer serve` in a real headless Chromium (Debian's package, driven by Selenium)."""

from __future__ import annotations

import base64
import io
import json
import os
import time

import numpy as np
import pytest
from PIL import Image

from serve_helpers import EXAMPLE

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium (a dev dependency) is not installed")
from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402

CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync")
if not (os.access(CHROMIUM, os.X_OK) and os.access(DRIVER, os.X_OK)):
    pytest.skip("Debian's chromium and chromium-driver are not installed (make test installs them)",
                allow_module_level=True)

CANVAS_PNG = "return document.getElementById('overlay').toDataURL('image/png');"
# The example decoded by the browser itself, as the page draws it before blending.
ORIGINAL_PNG = """
const done = arguments[arguments.length - 1];
fetch('/example.jpg').then((r) => r.blob()).then((b) => createImageBitmap(b)).then((bitmap) => {
  const c = document.createElement('canvas'); c.width = bitmap.width; c.height = bitmap.height;
  c.getContext('2d').drawImage(bitmap, 0, 0); done(c.toDataURL('image/png'));
});
"""


def _decode(data_url: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))).convert("RGB"))


@pytest.fixture
def browser(tmp_path):
    options = Options()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1100,800"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_script_timeout(30)
    yield driver
    driver.quit()


def _wait_state(driver, state: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while driver.find_element(By.TAG_NAME, "body").get_attribute("data-state") != state:
        assert time.monotonic() < deadline, f"page never reached state {state!r}: " + \
            driver.find_element(By.ID, "error").text
        time.sleep(0.1)


def test_page_segments_toggles_and_reports_errors(server, browser, tmp_path):
    browser.get(server.url + "/")
    browser.find_element(By.ID, "file").send_keys(str(EXAMPLE))  # upload the bundled example
    _wait_state(browser, "done")
    shown, original = _decode(browser.execute_script(CANVAS_PNG)), _decode(browser.execute_async_script(ORIGINAL_PNG))
    labels = np.asarray(Image.open(io.BytesIO(server.request("POST", "/v1/segment", EXAMPLE.read_bytes())[2])))
    palette = np.asarray(server.json("GET", "/v1/model")[1]["palette"], dtype=np.float64)
    assert shown.shape == original.shape == (*labels.shape, 3)
    expected = 0.5 * original + 0.5 * palette[labels]
    assert np.abs(shown - expected).max() <= 1.0  # the blend the labels ask for, up to rounding
    changed = (np.abs(expected - original) >= 1).any(axis=2)
    assert changed.mean() > 0.5 and ((shown != original).any(axis=2) == changed).mean() > 0.999

    # the legend lists what /v1/segment?format=json reports, largest share first
    summary = json.loads(server.request("POST", "/v1/segment?format=json", EXAMPLE.read_bytes())[2])
    items = browser.find_elements(By.CSS_SELECTOR, "#legend li")
    assert [int(li.get_attribute("data-class")) for li in items] == [c["id"] for c in summary["classes"]]
    assert [li.find_element(By.CLASS_NAME, "share").text for li in items] == \
        [f"{100 * c['share']:.1f}%" for c in summary["classes"]]
    assert "ms on the server" in browser.find_element(By.ID, "latency").text
    assert browser.find_element(By.ID, "model").text.endswith("classes · float32 · torch")  # dtype and runtime

    # hide the largest class with the keyboard alone: its pixels revert to the image, the others stay
    hidden = summary["classes"][0]["id"]
    box = items[0].find_element(By.TAG_NAME, "input")
    box.send_keys(Keys.SPACE)
    assert not box.is_selected()
    toggled = _decode(browser.execute_script(CANVAS_PNG))
    np.testing.assert_array_equal(toggled[labels == hidden], original[labels == hidden])
    np.testing.assert_array_equal(toggled[labels != hidden], shown[labels != hidden])
    browser.save_screenshot(str(tmp_path / "page.png"))
    assert (tmp_path / "page.png").stat().st_size > 10_000

    # a text file: the page shows the server's error
    text = tmp_path / "notes.txt"
    text.write_text("not an image at all\n")
    browser.find_element(By.ID, "file").send_keys(str(text))
    _wait_state(browser, "error")
    error = browser.find_element(By.ID, "error")
    assert error.is_displayed() and "Error 400" in error.text and "not an image" in error.text


def test_page_works_by_keyboard_on_a_phone_width_screen(server, browser):
    browser.set_window_size(390, 844)
    browser.get(server.url + "/")
    keyboard = ActionChains(browser)
    for _ in range(6):  # Tab from the top of the page to the example button, then Enter
        keyboard.send_keys(Keys.TAB).perform()
        if browser.switch_to.active_element.get_attribute("id") == "example":
            break
    assert browser.switch_to.active_element.get_attribute("id") == "example"
    keyboard.send_keys(Keys.ENTER).perform()
    _wait_state(browser, "done")
    assert browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
    canvas = browser.find_element(By.ID, "overlay")
    assert canvas.size["width"] <= 390
