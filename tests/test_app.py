"""`thermosynth serve`: upload checks, and the page driven in a real browser (Playwright + Debian's chromium).

The browser test starts the server on loopback with the shipped models, uploads a bundled scene, translates it,
checks the shown image and the 16-bit download, uploads a text file and checks the page's message, generates from a
prompt, checks that the page requested nothing from anywhere but the server, and saves a screenshot
(`THERMOSYNTH_APP_SCREENSHOT=path` keeps it, for the README).
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from thermosynth.data.errors import DataError

CHROMIUM = Path("/usr/bin/chromium")
SAMPLE = Path(__file__).resolve().parents[1] / "src/thermosynth/samples/roadscene/crop_LR_visible/FLIR_00233.jpg"


def test_check_upload_refuses_non_images_huge_images_and_big_files(tmp_path):
    from thermosynth.app import check_upload

    assert check_upload(str(SAMPLE), "visible photo") == SAMPLE
    notes = tmp_path / "notes.txt"
    notes.write_text("not a picture")
    with pytest.raises(DataError, match=r"notes.txt is not an image thermosynth can read"):
        check_upload(str(notes), "visible photo")
    huge = tmp_path / "huge.png"
    Image.new("L", (1500, 1000)).save(huge)
    with pytest.raises(DataError, match=r"huge.png is 1500x1000, 1.5 million pixels: over this server's limit"):
        check_upload(str(huge), "visible photo", max_pixels=1_000_000)
    with pytest.raises(DataError, match=r"huge.png is 0.0 MB, over this server's limit of 1e-06 MB"):
        check_upload(str(huge), "visible photo", max_upload_mb=1e-6)
    with pytest.raises(DataError, match="No visible photo given"):
        check_upload(None, "visible photo")


def test_an_empty_seed_field_gets_a_sentence_and_a_seed_repeats_its_draws():
    from thermosynth.app import MAX_SEED, seeded_generator

    with pytest.raises(DataError, match=f"The seed is empty: give a whole number from 0 to {MAX_SEED}"):
        seeded_generator(None)
    import torch

    draws = [torch.rand(3, generator=seeded_generator(seed)) for seed in (7.0, 7, MAX_SEED)]
    assert torch.equal(draws[0], draws[1]) and not torch.equal(draws[0], draws[2])


def test_an_address_in_use_is_said_before_the_models_load(monkeypatch):
    import thermosynth.app

    monkeypatch.setattr(thermosynth.app, "ThermalApp", lambda *args, **kwargs: pytest.fail("the models were loaded"))
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(ValueError, match=f"cannot listen on 127.0.0.1:{port} .*pass another --port"):
            thermosynth.app.serve("v2t-roadscene", "t2ir-hituav", port=port)
    with pytest.raises(ValueError, match="port 70000 is not a TCP port"):
        thermosynth.app.serve("v2t-roadscene", "t2ir-hituav", port=70000)


def _browser_missing() -> str | None:
    for module in ("gradio", "playwright"):
        try:
            __import__(module)
        except ImportError:
            return f"{module} is not installed (pip install -e '.[test]')"
    if not CHROMIUM.is_file():
        return f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium) to run the browser test"
    return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    port = _free_port()
    log = (tmp_path / "serve.log").open("w")
    process = subprocess.Popen([sys.executable, "-m", "thermosynth.cli", "serve", "--port", str(port)],
                               stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 180
    while "thermosynth app on" not in (tmp_path / "serve.log").read_text():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"the server did not start:\n{(tmp_path / 'serve.log').read_text()}")
        time.sleep(0.5)
    yield url
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=30)  # stops cleanly (removing its result files), not only when killed
    log.close()


def _upload(page, path) -> None:
    """Hand `path` to the V2T upload and wait until the page shows its name. Headless chromium sometimes loses the
    upload (seen 2026-12-03: the name never shown in 120 s, 2 of 5 fresh-clone CI runs that day), so it is tried
    again on a reloaded page, as a user would: the component has already swapped its file input for the pending
    upload (2026-12-04: a retry on the same page found no input to hand the file to). Three in a row fail the test,
    saying what the component showed."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    for attempt in range(3):
        if attempt:
            page.reload()
        page.locator("#v2t-upload input[type=file]").set_input_files(str(path), timeout=60_000)
        try:
            page.locator("#v2t-upload").get_by_text(path.name).wait_for(timeout=40_000)
            return
        except PlaywrightTimeout:
            continue
    shown = page.locator("#v2t-upload").inner_text()
    raise AssertionError(f"the page never showed the uploaded {path.name}; the upload component shows: {shown!r}")


@pytest.mark.skipif(_browser_missing() is not None, reason=str(_browser_missing()))
def test_app_in_a_browser(server, tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        requested: list[str] = []
        page.on("request", lambda request: requested.append(request.url))
        page.goto(server)

        # visible to thermal: a bundled scene in, a thermal image of the same size out, with 8 and 16-bit PNGs
        _upload(page, SAMPLE)
        page.click("#v2t-run")
        shown = page.locator("#v2t-thermal img")
        shown.wait_for(timeout=180_000)
        assert shown.evaluate("img => [img.naturalWidth, img.naturalHeight]") == list(Image.open(SAMPLE).size)
        download = page.locator("#v2t-png16 a").first
        download.wait_for()
        png16 = Image.open(io.BytesIO(page.request.get(download.get_attribute("href")).body()))
        assert png16.size == Image.open(SAMPLE).size and np.asarray(png16).dtype == np.uint16
        screenshot = tmp_path / "app.png"
        page.screenshot(path=screenshot, full_page=True)
        if os.environ.get("THERMOSYNTH_APP_SCREENSHOT"):
            shutil.copy(screenshot, os.environ["THERMOSYNTH_APP_SCREENSHOT"])

        # a file that is not an image: a sentence in the page, no traceback
        notes = tmp_path / "notes.txt"
        notes.write_text("not a picture")
        page.locator("#v2t-upload button[aria-label=Clear]").click()
        _upload(page, notes)
        page.click("#v2t-run")
        message = page.get_by_text("notes.txt is not an image thermosynth can read")
        message.wait_for(timeout=30_000)
        assert "Traceback" not in page.content()

        # text to infrared: the model's own image size
        page.get_by_role("tab", name="Text to infrared").click()
        page.locator("#t2ir-steps input[type=number]").fill("4")
        page.locator("#t2ir-steps input[type=number]").press("Enter")
        page.click("#t2ir-run")
        generated = page.locator("#t2ir-thermal img")
        generated.wait_for(timeout=180_000)
        assert generated.evaluate("img => [img.naturalWidth, img.naturalHeight]") == [320, 256]
        browser.close()
    # the page fetched nothing from elsewhere (no web fonts, no analytics)
    assert requested and [url for url in requested if not url.startswith((server, "data:", "blob:"))] == []
