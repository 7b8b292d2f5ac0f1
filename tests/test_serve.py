"""``yofo serve`` in a real browser: headless system Chromium driven by Playwright.

Loads the page, checks what it says about the checkpoint, sends a request without a video, a corrupt upload
and no sentence (messages on the page, the server keeps serving), then uploads a synthetic video, runs it,
and compares the masks downloaded as a zip with what `yofo segment` writes for the same file. The server
must listen on 127.0.0.1 only, and the page must load nothing from anywhere else.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from yofo.cli import main
from yofo.data.records import read_frame
from yofo.data.synthetic import synthesize
from yofo.data.ytvos import load_ytvos
from yofo.video_io import Mp4Writer

CHROMIUM = Path("/usr/bin/chromium")
SHIPPED = Path(__file__).resolve().parents[1] / "checkpoints" / "yofo-synthetic.safetensors"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _listening(port: int) -> set[str]:
    """Local addresses (hex, as in /proc/net/tcp*) of the sockets listening on ``port``."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:
                found.add(address)
    return found


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``yofo serve`` with the shipped checkpoint on a free port: its URL."""
    port = _free_port()
    folder = tmp_path_factory.mktemp("serve")
    log, temp = folder / "server.log", folder / "tmp"
    temp.mkdir()
    with log.open("w") as handle:
        process = subprocess.Popen([sys.executable, "-m", "yofo", "serve", "--checkpoint", str(SHIPPED), "--port",
                                    str(port), "--max-upload-mb", "1"], stdout=handle, stderr=subprocess.STDOUT,
                                   env={**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(temp)})
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 180
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            assert process.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
    yield {"url": url, "port": port, "process": process, "log": log, "tmp": temp}
    process.kill()


def test_serves_on_localhost_only(server):
    assert _listening(server["port"]) == {"0100007F"}  # 127.0.0.1, not 0.0.0.0 or ::


def test_uploads_over_the_limit_are_refused(server):
    import httpx

    upload = f"{server['url']}gradio_api/upload"
    refused = httpx.post(upload, files={"files": ("big.mp4", os.urandom(1_200_000))}, timeout=60)
    assert refused.status_code == 413 and "exceeded maximum allowed size" in refused.text
    assert httpx.post(upload, files={"files": ("small.mp4", os.urandom(10_000))}, timeout=60).status_code == 200


def test_without_gradio_one_line_tells_how_to_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gradio", None)  # import fails as if not installed
    assert main(["serve", "--checkpoint", str(SHIPPED)]) == 2
    assert capsys.readouterr().err == "error: yofo serve needs Gradio, an optional extra: pip install -e '.[web]'\n"


def test_page_segments_a_video_as_yofo_segment_does(server, tmp_path):
    if not CHROMIUM.is_file():
        pytest.skip("Chromium is not installed (apt-get install chromium; .ci/run does)")
    from playwright.sync_api import expect, sync_playwright

    synth = tmp_path / "synth"
    synthesize(synth, train=0, valid=1, seed=5, size=(96, 160), frames=8)
    video = load_ytvos(synth, "valid")[0]
    upload = tmp_path / "upload.mp4"  # outside the benchmark's folder, as any upload
    with Mp4Writer(upload, fps=8) as writer:
        for frame in video.frame_paths:
            writer.write(read_frame(frame))
    sentence = video.expressions[0].text
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x01 not a video" * 50)

    requests: list[str] = []
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=str(CHROMIUM), headless=True, args=FLAGS,
            accept_downloads=True, viewport={"width": 1280, "height": 900})
        try:
            page = context.new_page()
            page.on("request", lambda request: requests.append(request.url))
            page.goto(server["url"])
            expect(page.get_by_text("Trained on yofo synthetic benchmark")).to_be_visible(timeout=60_000)
            expect(page.get_by_text("knows only the synthetic benchmark's coloured shapes")).to_be_visible()

            def error_shown(text: str) -> str:
                toast = page.locator(".toast-body").filter(has_text=text)
                expect(toast.first).to_be_visible(timeout=60_000)
                shown = toast.first.inner_text()
                page.locator(".toast-close").first.click()
                return shown

            page.click("#segment")
            error_shown("upload a video or an image, or pick an example")
            page.set_input_files("#upload input[type=file]", str(corrupt))
            page.fill("#sentences textarea", sentence)
            page.click("#segment")
            shown = error_shown("corrupt.mp4: not a readable video")
            assert str(tmp_path) not in shown and "/corrupt.mp4" not in shown, shown  # not the server's copy
            (tmp_path / "bad-upload-message.txt").write_text(shown)
            page.locator("#upload button[aria-label='Clear']").first.click()
            page.set_input_files("#upload input[type=file]", str(upload))
            page.fill("#sentences textarea", "  \n ")
            page.click("#segment")
            error_shown("enter at least one sentence")

            page.fill("#sentences textarea", sentence)
            page.click("#segment")
            expect(page.locator("#message")).to_contain_text("Segmented 8 frame(s) with 1 sentence(s)", timeout=120_000)
            expect(page.locator("#overlay video")).to_have_count(1)
            with page.expect_download() as download:
                page.locator("#masks a").first.click()
            archive = tmp_path / "masks.zip"
            download.value.save_as(archive)
            page.screenshot(path=str(tmp_path / "serve.png"), full_page=True)
        finally:
            context.close()

    assert (tmp_path / "serve.png").stat().st_size > 10_000
    assert all(url.startswith(server["url"]) or url.startswith(("data:", "blob:")) for url in requests), \
        sorted({url for url in requests if not url.startswith(server["url"])})
    expected = tmp_path / "cli"
    assert main(["segment", str(upload), "--checkpoint", str(SHIPPED), "--out", str(expected), "--text", sentence]) == 0
    with zipfile.ZipFile(archive) as zf:
        names = sorted(zf.namelist())
        assert names == sorted(p.name for p in expected.iterdir())
        for name in names:
            if name.endswith(".png"):
                with zf.open(name) as handle, Image.open(handle) as image:
                    served = np.asarray(image)
                with Image.open(expected / name) as image:
                    assert np.array_equal(served, np.asarray(image)), name
    assert server["process"].poll() is None  # still serving after the bad requests


def test_a_long_run_can_be_cancelled(server, tmp_path):
    """Cancel stops a running request at its next frame and a queued one before it starts; the page segments
    again afterwards."""
    if not CHROMIUM.is_file():
        pytest.skip("Chromium is not installed (apt-get install chromium; .ci/run does)")
    from playwright.sync_api import expect, sync_playwright

    upload, short = tmp_path / "long.mp4", tmp_path / "short.mp4"
    for path, frames in ((upload, 240), (short, 8)):
        with Mp4Writer(path, fps=25) as writer:
            for t in range(frames):
                frame = np.full((480, 640, 3), 90, dtype=np.uint8)
                frame[100:200, t : t + 100] = (220, 30, 30)
                writer.write(frame)
    before = server["log"].read_text().count("request cancelled at frame")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=str(CHROMIUM), headless=True, args=FLAGS)
        try:
            running, queued = context.new_page(), context.new_page()  # two page sessions
            for page in (running, queued):
                page.goto(server["url"])
                page.set_input_files("#upload input[type=file]", str(upload))
                page.fill("#sentences textarea", "the red square")
            running.click("#segment")
            expect(running.locator("#message")).to_contain_text("Segmenting… frame", timeout=60_000)
            queued.click("#segment")  # one request at a time: it waits for the running one
            queued.click("#cancel")
            running.click("#cancel")
            expect(running.locator("#message")).to_have_text("Cancelled.", timeout=30_000)
            expect(queued.locator("#message")).to_have_text("Cancelled.", timeout=30_000)
            running.locator("#upload button[aria-label='Clear']").first.click()
            running.set_input_files("#upload input[type=file]", str(short))
            running.click("#segment")
            expect(running.locator("#message")).to_contain_text("Segmented 8 frame(s)", timeout=120_000)
        finally:
            context.close()
    log = server["log"].read_text()
    cancelled = log.split("request cancelled at frame ")[1:]
    assert len(cancelled) == before + 1, log[-2000:]  # the running request stopped; the queued one never ran
    assert int(cancelled[-1].split()[0]) < 240


def test_too_long_video_is_refused(tmp_path):
    from yofo.errors import InputError
    from yofo.serve import Limits, Segmentation, parse_sentences

    video = tmp_path / "clip.mp4"
    with Mp4Writer(video, fps=8) as writer:
        for _ in range(8):
            writer.write(np.full((64, 96, 3), 90, dtype=np.uint8))
    handler = Segmentation(SHIPPED, Limits(max_frames=5), tmp_path, [])
    with pytest.raises(InputError, match="at most 5"):
        handler(str(video), "the red circle", {}, {"done": 0, "total": None}, threading.Event())
    with pytest.raises(InputError, match="at least one sentence"):
        parse_sentences(" \n\n")
    assert parse_sentences("the red circle\n\n  the square  \n") == ["the red circle", "the square"]


def test_stopping_removes_temporary_files(server):
    assert any(server["tmp"].glob("yofo-serve-*/gradio"))  # Gradio's copies went into yofo's folder
    server["process"].terminate()
    assert server["process"].wait(timeout=60) in (0, 130)
    assert list(server["tmp"].glob("yofo-serve-*")) == [] and not (server["tmp"] / "gradio").exists()
