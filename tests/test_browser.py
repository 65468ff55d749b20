"""The app in a real headless Chromium: pick a condition, ask for 2 images, see 2; start a long run and cancel it;
switch to another model and see its labels.

Uses the system Chromium (Debian package `chromium`) through playwright; no browser is downloaded.
"""

from __future__ import annotations

import os
import shutil
import threading
import re
import time
from pathlib import Path

import pytest
from app_server import BRAIN_LABELS, load_app_module, serve_tiny_app


pytestmark = pytest.mark.slow  # end-to-end: a launched app
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]

if not Path(CHROMIUM).exists():
    pytest.skip("no Chromium installed (apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")


def save_screenshot(page, tmp_path: Path, name: str) -> None:
    """Saves into the test's tmp dir, and also into $MEDGEN_SCREENSHOT_DIR when set (docs/images)."""
    page.screenshot(path=str(tmp_path / name), full_page=True)
    assert (tmp_path / name).stat().st_size > 0
    if os.environ.get("MEDGEN_SCREENSHOT_DIR"):
        shutil.copyfile(tmp_path / name, Path(os.environ["MEDGEN_SCREENSHOT_DIR"]) / name)


def generation_running() -> bool:
    return any(thread.name == "medgen-generation" and thread.is_alive() for thread in threading.enumerate())


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    _, demo, url = serve_tiny_app(load_app_module("medgen_app_in_browser"), tmp_path_factory)
    yield url
    demo.close()


@pytest.fixture(scope="module")
def page(app_url):
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(120_000)
        page.goto(app_url)
        page.wait_for_selector("#generate")
        yield page
        browser.close()


def set_count(page, value: int) -> None:
    box = page.locator("#count input[type=number]")
    box.fill(str(value))
    box.press("Enter")


def status_text(page) -> str:
    return page.locator("#status").inner_text()


def test_pick_condition_generate_two_images(page, tmp_path):
    assert "not for diagnosis" in page.locator("#notice").inner_text()
    assert page.locator("#seed-shown textarea, #seed-shown input").first.input_value() == ""  # before any run: not 0
    # Cancel with nothing running changes nothing (it used to say "Cancelled: kept 0 of 4 images").
    before = status_text(page)
    page.locator("#cancel").click()
    page.get_by_text("Nothing to cancel: no run is in progress.").first.wait_for()  # a pop-up says so
    assert status_text(page) == before and "Cancelled" not in before
    page.locator("#condition input").click()
    page.get_by_role("option", name="pneumonia").click()
    set_count(page, 2)
    page.locator("#generate").click()
    page.wait_for_function(
        "() => document.querySelector('#status')?.innerText.includes('Done: 2 images')"
    )
    thumbnails = page.locator("#gallery img")
    assert thumbnails.count() == 2
    assert "pneumonia" in page.locator("#gallery").inner_text()
    page.wait_for_function("() => /^\\d+$/.test(document.querySelector('#seed-shown textarea, #seed-shown input')?.value)")
    page.wait_for_function("() => document.querySelector('#download')?.innerText.includes('medgen-images')")
    assert "medgen-images.zip" in page.locator("#download a").first.get_attribute("href")
    save_screenshot(page, tmp_path, "app_generated.png")
    # Cancel after a finished run leaves its "Done" line (it used to overwrite it with "kept 2 of 2").
    done = status_text(page)
    page.locator("#cancel").click()
    page.wait_for_timeout(1500)
    assert status_text(page) == done


def test_thumbnails_are_enlarged_and_their_captions_sit_under_them(page):
    """Issue: 16-32 px images showed as stamps, and two-line captions covered the bottom of each thumbnail."""
    page.wait_for_function(  # measured once both thumbnails have loaded (a busy machine loads them late)
        "() => [...document.querySelectorAll('#gallery .thumbnail-item img')].filter(i => i.complete && i.naturalWidth).length == 2"
    )
    boxes = page.evaluate(
        """() => [...document.querySelectorAll('#gallery .thumbnail-item')].map(item => {
            const image = item.querySelector('img'), caption = item.querySelector('.caption-label');
            const i = image.getBoundingClientRect(), c = caption.getBoundingClientRect();
            return {natural: image.naturalWidth, width: i.width, imageBottom: i.bottom, captionTop: c.top};
        })"""
    )
    assert len(boxes) == 2
    for box in boxes:
        assert box["natural"] == 256  # the 16 px image, enlarged 16 times for display
        assert box["width"] >= 100  # shown at thumbnail size, not as a 16 px stamp
        assert box["captionTop"] >= box["imageBottom"] - 1  # the caption is under the image, not over it


def test_cancel_a_long_run_keeps_finished_images(page, tmp_path):
    page.get_by_text("Sampling settings").click()
    steps = page.locator("input[aria-label='number input for Denoising steps']")
    steps.fill("90")  # 4 batches of a tiny model (100 training timesteps) stay running while a loaded machine's
    steps.press("Enter")  # browser notices the first one (at 30 steps the run could end before the check)
    set_count(page, 8)
    page.locator("#generate").click()
    # The run starts from an empty gallery (the previous run's images go), then shows its first batch.
    page.wait_for_function("() => document.querySelector('#status')?.innerText.includes('Generating 8 images')")
    page.wait_for_function(
        "() => document.querySelectorAll('#gallery img').length >= 2", timeout=300_000
    )
    assert generation_running()
    page.locator("#cancel").click()
    page.wait_for_function("() => document.querySelector('#status')?.innerText.includes('Cancelled')")
    deadline = time.monotonic() + 60
    while generation_running() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not generation_running(), "the run kept the worker busy after Cancel"
    # the final status names what was kept (a batch on its way at the click counts), and the gallery shows
    # exactly those images, whole batches of 2
    page.wait_for_function(
        "() => /kept \\d+ of 8 images/.test(document.querySelector('#status')?.innerText || '')", timeout=30_000
    )
    kept = int(re.search(r"kept (\d+) of 8 images", page.locator("#status").inner_text()).group(1))
    assert 2 <= kept < 8 and kept % 2 == 0, kept
    page.wait_for_function(f"() => document.querySelectorAll('#gallery img').length === {kept}", timeout=30_000)
    save_screenshot(page, tmp_path, "app_cancelled.png")


def test_the_progress_bar_does_not_cover_the_status_line(page):
    # The progress bar has a place of its own: the status line never carries the progress overlay.
    assert page.locator("#progress").count() == 1
    assert page.locator("#status [data-testid='status-tracker'] .progress-bar").count() == 0


def test_picking_another_model_shows_its_labels_and_generates_with_it(page, tmp_path):
    page.locator("#model input").click()
    page.get_by_role("option", name="tiny-brain").click()
    page.wait_for_function("() => document.querySelector('#model-details')?.innerText.includes('tiny-brain')")
    page.locator("#condition input").click()
    options = page.locator("#condition [role=option]")
    page.wait_for_function(f"() => [...document.querySelectorAll('#condition [role=option]')].some(o => o.innerText.includes('{BRAIN_LABELS[-1]}'))")
    names = [options.nth(i).inner_text().replace("✓", "").strip() for i in range(options.count())]
    assert names == list(BRAIN_LABELS)
    page.locator("#condition [role=option]", has_text="meningioma").click()
    set_count(page, 2)
    steps = page.locator("input[aria-label='number input for Denoising steps']")
    if not steps.is_visible():
        page.get_by_text("Sampling settings").click()
    steps.fill("2")
    steps.press("Enter")
    page.locator("#generate").click()
    page.wait_for_function("() => document.querySelector('#status')?.innerText.includes('Done: 2 images')")
    assert "meningioma" in page.locator("#gallery").inner_text()
    save_screenshot(page, tmp_path, "app_model_switched.png")
