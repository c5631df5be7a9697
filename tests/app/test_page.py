"""The web page in a real headless Chromium (Debian's chromium + chromium-driver, WebDriver protocol): it loads,
classifies a video with typed labels (probabilities and sampled frames shown), searches an index (thumbnails in
rank order), and binds to 127.0.0.1. A screenshot of each page is taken.

The browser is installed by `make test` (Makefile); a missing browser FAILS these tests instead of skipping them,
so that CI cannot pass without running them. Deselect them explicitly with -m "not slow".
"""
from __future__ import annotations

import os
import re
import struct
import urllib.request
from pathlib import Path

import pytest

from msta.index import VideoIndex, update_index
from tests.app.webdriver import Browser, free_port, missing_browser

pytestmark = pytest.mark.slow
SCREENSHOTS = os.environ.get("MSTA_APP_SCREENSHOTS")   # a folder to keep the screenshots in (README's picture)


@pytest.fixture(scope="module")
def served(index_world, index_model, tmp_path_factory):
    """The page, serving from a background thread on a free port: (url, index path)."""
    problem = missing_browser()
    assert problem is None, problem
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from msta.app import build_app, launch

    out = tmp_path_factory.mktemp("page") / "videos.msta-index"
    update_index(index_world["videos"], out, index_model, progress=False)
    port = free_port()
    page = launch(build_app([str(index_world["ckpt"])], str(index_world["cfg"]), [str(out)]), port=port,
                  block=False)
    try:
        yield f"http://127.0.0.1:{port}/", out
    finally:
        page.close()


@pytest.fixture(scope="module")
def browser():
    with Browser() as b:
        yield b


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def _shot(browser: Browser, tmp_path: Path, name: str) -> Path:
    folder = Path(SCREENSHOTS) if SCREENSHOTS else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    path = browser.screenshot(folder / name)
    w, h = _png_size(path)
    assert w >= 800 and h >= 600
    return path


def test_classify_page(served, browser, index_world, tmp_path):
    url, _ = served
    browser.get(url)
    browser.wait_for("#classify_btn")
    for elem in ("#ckpt", "#video", "#video_path", "#labels", "#probs", "#frames"):
        assert browser.find_all(elem), f"{elem} missing from the page"
    assert str(index_world["ckpt"]) in browser.script("return document.querySelector('#ckpt input').value")
    video = sorted(index_world["videos"].rglob("*.mp4"))[0]
    browser.type(browser.find_all("#video_path textarea, #video_path input")[0], str(video))
    browser.type(browser.find_all("#labels textarea, #labels input")[0], "a red square, a green circle, a blue cat")
    browser.click(browser.find_all("#classify_btn")[0])
    frames = browser.wait_for("#frames img", count=4)
    assert len(frames) == 4                                   # the model's 4 sampled frames
    text = browser.wait_until(lambda: (lambda t: t if "%" in t else None)(browser.text(browser.find_all("#probs")[0])),
                              what="probabilities")
    for label in ("a red square", "a green circle", "a blue cat"):
        assert label in text
    percents = [float(p) for p in re.findall(r"(\d+(?:\.\d+)?)%", text)]
    assert len(percents) >= 3 and sum(percents[:3]) == pytest.approx(100, abs=3)
    assert "classified" in browser.text(browser.find_all("#message")[0])
    _shot(browser, tmp_path, "app_classify.png")


def test_upload_a_video(served, browser, index_world, tmp_path):
    """The upload box: the browser sends the file to the server, which classifies the uploaded copy."""
    url, _ = served
    browser.get(url)
    browser.wait_for("#classify_btn")
    video = sorted(index_world["videos"].rglob("*.mp4"))[-1]
    browser.type(browser.wait_for("#video input[type=file]")[0], str(video))
    browser.wait_for("#video video")                           # the uploaded clip is shown in a player
    browser.type(browser.find_all("#labels textarea, #labels input")[0], "a yellow square, a red circle")
    browser.click(browser.find_all("#classify_btn")[0])
    message = browser.wait_until(lambda: (lambda t: t if "classified" in t else None)(
        browser.text(browser.find_all("#message")[0])), what="the classification")
    assert video.name in message and str(video.parent) not in message    # Gradio's uploaded copy, not the original
    assert len(browser.wait_for("#frames img", count=4)) == 4
    _shot(browser, tmp_path, "app_upload.png")


def test_search_page(served, browser, tmp_path):
    url, index_path = served
    browser.get(url)
    tab = browser.wait_for(xpath="//button[@role='tab'][contains(., 'Search an index')]")[0]
    browser.click(tab)
    browser.wait_for("#search_btn")
    for elem in ("#index", "#query", "#topk", "#results"):
        assert browser.find_all(elem), f"{elem} missing from the page"
    browser.type(browser.find_all("#query textarea, #query input")[0], "a red square")
    browser.click(browser.find_all("#search_btn")[0])
    thumbs = browser.wait_for("#results img", count=8)
    assert len(thumbs) == 8                                   # the slider's default of 8 results
    captions = browser.wait_until(lambda: browser.script(
        "return Array.from(document.querySelectorAll('#results .caption-label, #results figcaption, #results "
        "[class*=caption]')).map(e => e.textContent.trim()).filter(t => t.startsWith('#'))"), what="captions")
    expected = VideoIndex(index_path).search("a red square", topk=8)
    assert [c.split()[0] for c in captions[:8]] == [f"#{h.rank}" for h in expected]
    assert [c.split()[-1] for c in captions[:8]] == [os.path.basename(h.path) for h in expected]
    _shot(browser, tmp_path, "app_search.png")


def test_error_is_shown_on_the_page(served, browser):
    url, _ = served
    browser.get(url)
    browser.click(browser.wait_for("#classify_btn")[0])          # no video, no labels
    message = browser.wait_until(lambda: (lambda t: t if "Error" in t else None)(
        browser.text(browser.find_all("#message")[0])), what="the error message")
    assert "choose a video first" in message


def test_binds_to_loopback_only(served):
    url, _ = served
    assert url.startswith("http://127.0.0.1:")
    assert urllib.request.urlopen(url, timeout=10).status == 200
    from msta.cli.app import build_parser

    assert build_parser().parse_args([]).host == "127.0.0.1"
