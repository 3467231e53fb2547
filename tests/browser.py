"""A real headless Chromium for the page tests (Debian's chromium + chromedriver; nothing downloaded).

Without a browser on the machine the page tests are skipped, unless
``PROVENANCE_REQUIRE_BROWSER`` is set (CI sets it: there a missing browser is a failure).
"""

from __future__ import annotations

import io
import os
import shutil

import pytest
from PIL import Image


def _find(*names: str) -> str | None:
    return next((found for found in map(shutil.which, names) if found), None)


def chromium():
    """A started headless Chromium (selenium WebDriver) that keeps the browser's console log."""
    browser = _find("chromium", "chromium-browser", "google-chrome")
    driver_path = _find("chromedriver")
    if browser is None or driver_path is None:
        message = "no chromium/chromedriver on this machine (apt-get install chromium chromium-driver)"
        if os.environ.get("PROVENANCE_REQUIRE_BROWSER"):
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1200,1600", "--force-device-scale-factor=1", "--hide-scrollbars"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=driver_path), options=options)


def console_errors(driver) -> list[str]:
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def broken_images(driver) -> list[str]:
    return driver.execute_script(
        "return Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src.slice(0, 60));")


def full_page_screenshot(driver) -> Image.Image:
    height = driver.execute_script("return Math.ceil(document.documentElement.scrollHeight);")
    driver.set_window_size(1200, min(max(height + 40, 600), 12000))
    return Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB")


def element_rect(driver, element) -> dict:
    """The element's box in page pixels (document coordinates, as on a full-page screenshot)."""
    return driver.execute_script(
        "const r = arguments[0].getBoundingClientRect();"
        "return {x: r.left + window.scrollX, y: r.top + window.scrollY, width: r.width, height: r.height};", element)


def save_for_docs(image: Image.Image, name: str) -> None:
    """Also keep a screenshot in ``PROVENANCE_SCREENSHOT_DIR`` when set (how docs/ gets its pictures)."""
    folder = os.environ.get("PROVENANCE_SCREENSHOT_DIR")
    if folder:
        os.makedirs(folder, exist_ok=True)
        image.save(os.path.join(folder, name), quality=80, optimize=True)
