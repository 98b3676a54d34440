"""The captioning page in a real browser: Debian's headless Chromium driven by Selenium.

``serve`` runs as a user starts it, with the shipped model, on a free loopback port. The browser
chooses the examples/ photos and one file that is not an image, captions them, and the test checks
what a person would see: a spinner and a disabled button while it works, then each photo's caption
(the same ones the API returns for the same files), its annotated PNG and attention map, the error
next to the bad file, a layout that fits a phone, keyboard focus and alt text. The screenshot goes
to the test's temporary folder; with CAPTIONING_UPDATE_SCREENSHOT=1 it also replaces
docs/serve_screenshot.png (the README's picture), so ordinary runs leave the checkout untouched.

Skipped, with the reason, where Chromium, its driver or Selenium is missing (``.ci/run`` installs
them: ``apt-get install chromium chromium-driver``).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from tests.support.serve_process import PROJECT_ROOT, running_server

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
EXAMPLES = sorted((PROJECT_ROOT / "examples").glob("*.jpg"))
SHIPPED_MODEL = PROJECT_ROOT / "saved_models" / "default"
SCREENSHOT = PROJECT_ROOT / "docs" / "serve_screenshot.png"
# Flags that let headless Chromium run as root in a container without reaching the network.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--hide-scrollbars")
WIDE, PHONE = (1280, 900), (390, 844)


def _browser(tmp_path: Path):
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed "
                                                                 "(pip install -r requirements.txt)")
    if not CHROMIUM or not CHROMEDRIVER:
        pytest.skip("no browser: install Debian's chromium and chromium-driver "
                    "(apt-get install chromium chromium-driver; .ci/run does)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    options.add_argument(f"--window-size={WIDE[0]},{WIDE[1]}")
    service = webdriver.ChromeService(executable_path=CHROMEDRIVER, log_output=str(tmp_path / "driver.log"))
    try:
        return webdriver.Chrome(options=options, service=service)
    except Exception as error:  # noqa: BLE001 - no usable browser here is a reason to skip
        pytest.skip(f"headless Chromium did not start: {str(error).splitlines()[0]}")


@pytest.fixture
def browser(tmp_path):
    driver = _browser(tmp_path)
    yield driver
    driver.quit()


def _wait(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def _cards(driver) -> list[dict]:
    return driver.execute_script("""
        return [...document.querySelectorAll('#photos li.photo')].map((card) => ({
            name: card.dataset.name, state: card.dataset.state,
            caption: card.querySelector('.caption').hidden ? null : card.querySelector('.caption').textContent,
            error: card.querySelector('.error').hidden ? null : card.querySelector('.error').textContent,
        }));""")


def _images_loaded(driver) -> bool:
    return driver.execute_script("""
        // Attention maps in closed <details> have no src until opened.
        const shown = [...document.querySelectorAll('img')].filter((img) => img.getAttribute('src'));
        return shown.length > 0 && shown.every((img) => img.complete && img.naturalWidth > 0);""")


def _screenshot(driver, size: tuple[int, int], target: Path) -> Path:
    """The whole page at this width (the window is made as tall as the page)."""
    driver.set_window_size(*size)
    height, chrome = driver.execute_script(
        "return [document.documentElement.scrollHeight, window.outerHeight - window.innerHeight]")
    driver.set_window_size(size[0], max(size[1], height + chrome))
    driver.execute_script("window.scrollTo(0, 0)")
    _wait(lambda: _images_loaded(driver), 30, "the images to load")
    driver.save_screenshot(str(target))
    return target


def test_page_captions_photos_like_the_api(browser, tmp_path):
    import httpx2
    from PIL import Image
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    if not (SHIPPED_MODEL / "config.json").is_file():
        pytest.skip(f"the shipped model is not at {SHIPPED_MODEL}")
    not_an_image = tmp_path / "shopping list.jpg"
    not_an_image.write_text("eggs, milk, bread\n")
    uploads = [*EXAMPLES, not_an_image]
    private = tmp_path / "server-tmp"
    private.mkdir()
    with running_server("--model", str(SHIPPED_MODEL), env={"TMPDIR": str(private)}) as server:
        browser.get(server.url)
        _wait(lambda: "default" in browser.find_element(By.ID, "model").text, 30, "the model line")
        assert browser.find_element(By.ID, "caption").get_attribute("disabled")  # nothing chosen yet

        # Keyboard: Tab from the top reaches the photo chooser, then the beam size. (Key presses go
        # through ActionChains: send_keys on a file input would be taken as a file name.)
        ActionChains(browser).send_keys(Keys.TAB).perform()
        assert browser.switch_to.active_element.get_attribute("id") == "files"
        ActionChains(browser).send_keys(Keys.TAB).perform()
        assert browser.switch_to.active_element.get_attribute("id") == "beam"

        browser.find_element(By.ID, "files").send_keys("\n".join(str(path) for path in uploads))
        _wait(lambda: len(_cards(browser)) == len(uploads), 10, "a preview card per file")
        assert [card["state"] for card in _cards(browser)] == ["ready"] * len(uploads)
        _wait(lambda: browser.execute_script(
            "return [...document.querySelectorAll('img.preview')].every((i) => i.complete && i.naturalWidth > 0)"),
            10, "the previews")
        browser.find_element(By.ID, "caption").click()
        # While captioning: the button is disabled and the spinner says so.
        assert browser.find_element(By.ID, "caption").get_attribute("disabled")
        assert browser.find_elements(By.CSS_SELECTOR, "#busy .spinner")
        assert "Captioning 5 photos" in browser.find_element(By.ID, "busy").text
        _wait(lambda: all(card["state"] in ("done", "error") for card in _cards(browser)), 300,
              "every photo to be captioned")
        assert not browser.find_elements(By.CSS_SELECTOR, "#busy .spinner")
        assert "Captioned 4 of 5" in browser.find_element(By.ID, "busy").text
        cards = _cards(browser)

        # The page shows what the API says for the same files, in the same order.
        with httpx2.Client(timeout=300) as client:
            files = [("files", (path.name, path.read_bytes(), "application/octet-stream")) for path in uploads]
            api = client.post(server.url + "api/captions", files=files).json()["results"]
        assert [card["name"] for card in cards] == [entry["image"] for entry in api]
        assert [card["caption"] for card in cards] == [entry["caption"] for entry in api]
        assert [card["error"] for card in cards] == [entry.get("error") for entry in api]
        assert cards[-1]["state"] == "error" and "not an image" in cards[-1]["error"]
        assert all(card["caption"] for card in cards[:-1])

        # Each captioned photo: the annotated PNG, a download link, and the attention map.
        links = browser.find_elements(By.CSS_SELECTOR, "a[download$='_captioned.png']")
        assert len(links) == len(EXAMPLES)
        assert len(browser.find_elements(By.CSS_SELECTOR, "details.attention")) == len(EXAMPLES)
        first_map = browser.find_element(By.CSS_SELECTOR, "details.attention summary")
        first_map.send_keys(Keys.ENTER)  # opened from the keyboard
        _wait(lambda: browser.execute_script(
            "const i = document.querySelector('details.attention img'); return i.complete && i.naturalWidth > 0"),
            120, "the attention map")
        alts = browser.execute_script("return [...document.querySelectorAll('img')].map((i) => i.alt)")
        assert alts and all(alt.strip() for alt in alts)
        assert any(cards[0]["caption"] in alt for alt in alts)

        shot = _screenshot(browser, WIDE, tmp_path / "serve_screenshot.png")
        phone = _screenshot(browser, PHONE, tmp_path / "serve_screenshot_phone.png")
        # On a phone-sized screen nothing sticks out sideways.
        assert browser.execute_script(
            "return document.documentElement.scrollWidth <= window.innerWidth + 1")
        browser.set_window_size(*WIDE)

        # FastAPI's docs page works with nothing but this server: Swagger UI draws the endpoints.
        browser.get(server.url + "docs")
        _wait(lambda: browser.find_elements(By.CSS_SELECTOR, ".swagger-ui .opblock"), 60,
              "Swagger UI to list the endpoints")
        assert "/api/captions" in browser.find_element(By.CSS_SELECTOR, ".swagger-ui").text
    for path, width in ((shot, WIDE[0]), (phone, PHONE[0])):
        with Image.open(path) as image:
            assert image.format == "PNG" and image.width >= width * 0.9
    assert list(private.glob("captioning-serve-*")) == []  # its private folder went at shutdown
    if os.environ.get("CAPTIONING_UPDATE_SCREENSHOT"):
        shutil.copyfile(shot, SCREENSHOT)
