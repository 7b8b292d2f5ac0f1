"""``yofo segment``: palette PNGs, overlay.mp4, stride, real DAVIS frames, one-line errors on bad input, the
synthetic-only notice, threads, progress on stderr, and outputs that are never silently lost."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import shutil
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from yofo.cli import main
from yofo.config import load_config
from yofo.data.synthetic import synthesize
from yofo.engine.checkpoint import load_model, save_model, training_metadata
from yofo.predictor import VideoSegmenter, label_map
from yofo.video_io import Mp4Writer, open_video

TEXTS = ["the red square", "the dark background"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, random_model) -> Path:
    model = random_model().eval()
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save_model(model, path)
    return path


def _write_clip(path: Path, frames: int) -> Path:
    """An mp4 of ``frames`` frames (64×96): a red square moving right over grey, back at the left every 8 frames."""
    with Mp4Writer(path, fps=10) as writer:
        for t in range(frames):
            frame = np.full((64, 96, 3), 90, dtype=np.uint8)
            frame[20:40, 10 + 8 * (t % 8) : 30 + 8 * (t % 8)] = (220, 30, 30)
            writer.write(frame)
    return path


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    """5 frames."""
    return _write_clip(tmp_path_factory.mktemp("video") / "clip.mp4", 5)


@pytest.fixture(scope="module")
def long_video(tmp_path_factory) -> Path:
    """150 frames: a few seconds of work for the tiny model."""
    return _write_clip(tmp_path_factory.mktemp("long") / "long.mp4", 150)


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    """A small `yofo synth` benchmark (1 train, 1 valid video of 6 frames at 64×96)."""
    root = tmp_path_factory.mktemp("bench") / "synth"
    synthesize(root, train=1, valid=1, seed=0, size=(64, 96), frames=6)
    return root


@pytest.fixture(scope="module")
def synthetic_checkpoint(tmp_path_factory, random_model, synth) -> Path:
    """A model whose metadata says it was trained on the synthetic benchmark (as the trainer records it)."""
    path = tmp_path_factory.mktemp("ckpt") / "synthetic.safetensors"
    save_model(random_model().eval(), path, training_metadata(load_config("tiny", [f"data.root={synth}"]).data))
    return path


@pytest.fixture
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _command(video, checkpoint, out, *extra: str) -> list[str]:
    return [sys.executable, "-m", "yofo", "segment", str(video), "--checkpoint", str(checkpoint), "--out", str(out),
            "--text", TEXTS[0], *extra]


def _wait_for(condition, what: str, process: subprocess.Popen, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, f"the run ended before {what}: {process.communicate()[1][-2000:]}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _segment(video, checkpoint, out, *extra: str) -> int:
    args = ["segment", str(video), "--checkpoint", str(checkpoint), "--out", str(out)]
    for text in TEXTS:
        args += ["--text", text]
    return main(args + list(extra))


def test_segment_mp4_with_overlay_and_stride(video, checkpoint, tmp_path, capsys):
    out = tmp_path / "out"
    assert _segment(video, checkpoint, out, "--overlay", "--stride", "2") == 0
    assert "frames/s" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["00000.png", "00002.png", "00004.png", "overlay.mp4",
                                                     "sentences.json"]
    assert json.loads((out / "sentences.json").read_text()) == {"1": TEXTS[0], "2": TEXTS[1]}
    overlay = open_video(out / "overlay.mp4")
    assert overlay.size == (64, 96) and len(list(overlay)) == 3

    # the PNGs are the predictor's label map of the same frames: highest logit wins, 0 where none > 0
    segmenter = VideoSegmenter(load_model(checkpoint))
    segmenter.start(TEXTS)
    for name, frame in open_video(video, stride=2).iter_named():
        with Image.open(out / f"{name}.png") as image:
            assert image.mode == "P"
            ids = np.asarray(image)
        assert ids.shape == (64, 96) and set(np.unique(ids)) <= {0, 1, 2}
        assert np.array_equal(ids, label_map(segmenter.step_logits(frame)))


def _blackswan(real_data: Path, folder: Path, count: int) -> Path:
    """The first ``count`` real DAVIS frames of blackswan copied to ``folder/blackswan``."""
    source = real_data / "DAVIS" / "JPEGImages" / "480p" / "blackswan"
    if not source.is_dir():
        pytest.skip("blackswan frames are absent")
    frames = folder / "blackswan"
    frames.mkdir()
    for path in sorted(source.glob("*.jpg"))[:count]:
        shutil.copy(path, frames / path.name)
    return frames


def test_segment_real_davis_frames(real_data, checkpoint, tmp_path):
    frames = _blackswan(real_data, tmp_path, 3)
    out = tmp_path / "out"
    assert main(["segment", str(frames), "--checkpoint", str(checkpoint), "--out", str(out),
                 "--text", "a black feathered swan"]) == 0
    names = sorted(p.name for p in out.glob("*.png"))
    assert names == ["00000.png", "00001.png", "00002.png"]
    with Image.open(out / names[0]) as image:
        assert image.size == (854, 480) and image.mode == "P"


def test_bad_input_is_one_line_exit_2_and_keeps_existing_output(video, checkpoint, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "corrupt.mp4").write_bytes(b"\x00\x01garbage" * 100)
    (tmp_path / "notes.txt").write_text("not a video")
    (tmp_path / "not_yofo.safetensors").touch()
    save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.png").write_bytes(b"earlier result")

    cases = [
        ([str(tmp_path / "missing.mp4")], "no such file"),
        ([str(tmp_path / "corrupt.mp4")], "not a readable video"),
        ([str(tmp_path / "empty")], "no frames"),
        ([str(tmp_path / "notes.txt")], "unsupported file type"),
        ([str(video), "--text", ""], "empty"),
        ([str(video), "--text", TEXTS[0]], "twice"),
        ([str(video), "--stride", "0"], "stride"),
    ]
    for extra, message in cases:
        assert _segment(extra[0], checkpoint, out, *extra[1:]) == 2, message
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    for bad_checkpoint, message in [(tmp_path / "none.safetensors", "not found"),
                                    (tmp_path / "not_yofo.safetensors", "not a safetensors file"),
                                    (tmp_path / "other.safetensors", "not a yofo checkpoint")]:
        assert _segment(video, bad_checkpoint, out) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert sorted(p.name for p in out.iterdir()) == ["keep.png"]


def test_synthetic_model_says_so_on_real_footage_only(real_data, synthetic_checkpoint, synth, tmp_path, capsys):
    frames = _blackswan(real_data, tmp_path, 2)
    notice = f"warning: {synthetic_checkpoint} knows only the yofo synthetic benchmark's coloured shapes; " \
             f"blackswan is not from that benchmark: expect poor or empty masks"
    for footage, out in [(frames, tmp_path / "real"), (synth / "valid" / "JPEGImages" / "valid00000", tmp_path / "syn")]:
        assert _segment(footage, synthetic_checkpoint, out, "--text", "a black swan") == 0
        err = capsys.readouterr().err
        if footage == frames:  # one line, once
            assert [line for line in err.splitlines() if "synthetic" in line] == [notice + ' (README, "Segment your own video")']
        else:
            assert "synthetic" not in err, err
    # the library says it too, once per segmenter, for paths; a model without the record stays silent
    segmenter = VideoSegmenter(load_model(synthetic_checkpoint))
    assert segmenter.check_footage(frames).startswith(notice[len("warning: "):])
    assert segmenter.check_footage(synth) is None and segmenter.check_footage(synth / "valid") is None
    assert VideoSegmenter(load_model(synthetic_checkpoint)).check_footage(tmp_path / "nowhere.mp4") is not None


def test_trained_on_real_data_or_unrecorded_gives_no_notice(random_model, video, checkpoint, tmp_path, capsys):
    real = tmp_path / "real.safetensors"
    save_model(random_model().eval(), real, training_metadata(load_config("tiny", ["data.root=/data/ref-youtube-vos"]).data))
    for path in (real, checkpoint):
        assert load_model(path).trained_on.synthetic_only is not True
        assert _segment(video, path, tmp_path / path.stem) == 0
        assert "synthetic" not in capsys.readouterr().err


def test_shipped_checkpoint_is_known_to_be_synthetic_only():
    shipped = Path(__file__).resolve().parents[1] / "checkpoints" / "yofo-synthetic.safetensors"
    trained_on = load_model(shipped).trained_on
    assert trained_on.synthetic_only is True and trained_on.summary.startswith("yofo synthetic benchmark")


def test_long_sentence_warning_is_one_line(video, checkpoint, tmp_path, capsys):
    sentence = " ".join(["the big red square"] * 15)
    assert main(["segment", str(video), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "o"),
                 "--text", "the dog", "--text", sentence]) == 0
    err = capsys.readouterr().err
    assert err.splitlines() == ["warning: sentence 2 has 62 tokens; only the first 24 are used"]


def test_threads_are_honoured_and_default_to_one(video, checkpoint, tmp_path, monkeypatch, capsys, restore_threads):
    seen = []
    step_logits = VideoSegmenter.step_logits
    monkeypatch.setattr(VideoSegmenter, "step_logits",
                        lambda self, frame: seen.append(torch.get_num_threads()) or step_logits(self, frame))
    torch.set_num_threads(2)
    for extra, threads in [(["--threads", "2"], 2), ([], 1)]:
        seen.clear()
        assert _segment(video, checkpoint, tmp_path / f"t{threads}", *extra) == 0
        assert seen == [threads] * 5
        assert f"{threads} thread(s)" in capsys.readouterr().out
    assert _segment(video, checkpoint, tmp_path / "bad", "--threads", "-1") == 2
    assert "threads" in capsys.readouterr().err


def test_progress_goes_to_stderr_and_stdout_is_one_line(video, checkpoint, tmp_path):
    for extra, shown in [((), True), (("--no-progress",), False)]:
        master, slave = pty.openpty()  # stderr is a terminal, as in a shell, so tqdm draws its bar
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # 120 columns wide
        process = subprocess.Popen(_command(video, checkpoint, tmp_path / f"p{shown}", *extra), stdin=subprocess.DEVNULL,
                                   stdout=subprocess.PIPE, stderr=slave, env={**os.environ, "OMP_NUM_THREADS": "1"})
        os.close(slave)
        err = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # the terminal closed with the process
                break
            if not chunk:
                break
            err += chunk
        os.close(master)
        out = process.stdout.read().decode()
        assert process.wait(timeout=300) == 0
        assert out.count("\n") == 1 and out.startswith("segmented 5 frames x 1 sentences"), out
        assert (b"segment: 100%" in err and b"5/5" in err and b"frame/s" in err) == shown, err


def test_existing_output_needs_overwrite(video, checkpoint, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()  # an empty folder is used as it is
    assert _segment(video, checkpoint, out) == 0
    first = sorted(p.name for p in out.iterdir())
    (out / "mine.txt").write_text("keep me")
    assert _segment(video, checkpoint, out, "--stride", "2") == 2
    err = capsys.readouterr().err
    assert err == f"error: {out}: output folder exists and is not empty; pass --overwrite to replace it\n"
    assert sorted(p.name for p in out.iterdir()) == sorted(first + ["mine.txt"])
    assert _segment(video, checkpoint, out, "--stride", "2", "--overwrite") == 0
    assert sorted(p.name for p in out.iterdir()) == ["00000.png", "00002.png", "00004.png", "sentences.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temp folder, no lock left


def test_second_concurrent_run_fails_and_the_first_completes(long_video, checkpoint, tmp_path, capsys):
    out = tmp_path / "out"
    first = subprocess.Popen(_command(long_video, checkpoint, out, "--no-progress"), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        _wait_for(lambda: any(tmp_path.glob(".out.*.tmp/00001.png")), "the first run writes frames", first)
        assert _segment(long_video, checkpoint, out, "--overwrite") == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {out}: output folder: another run is writing it") and err.count("\n") == 1
        stdout, stderr = first.communicate(timeout=600)
    finally:
        first.kill()
    assert first.returncode == 0, stderr
    assert "segmented 150 frames" in stdout
    assert sorted(p.name for p in out.iterdir()) == [f"{t:05d}.png" for t in range(150)] + ["sentences.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.parametrize("earlier", [False, True])
def test_interrupted_run_leaves_no_partial_folder(long_video, checkpoint, tmp_path, earlier):
    out = tmp_path / "out"
    if earlier:
        out.mkdir()
        (out / "earlier.png").write_bytes(b"an earlier result")
    # SIGINT back to its default in the child: a shell ignores it in background jobs (`make test &`), and
    # Python inherits that and installs no KeyboardInterrupt handler
    run = subprocess.Popen(_command(long_video, checkpoint, out, "--no-progress", "--overwrite"),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env={**os.environ, "OMP_NUM_THREADS": "1"},
                           preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        _wait_for(lambda: any(tmp_path.glob(".out.*.tmp/00003.png")), "the run writes frames", run)
        run.send_signal(signal.SIGINT)
        stdout, stderr = run.communicate(timeout=300)
    finally:
        run.kill()
    assert run.returncode == 130 and stderr.strip().endswith("interrupted") and stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == (["out"] if earlier else [])
    if earlier:
        assert [p.name for p in out.iterdir()] == ["earlier.png"]


def test_failure_mid_video_leaves_no_half_written_output(checkpoint, tmp_path, capsys):
    frames = tmp_path / "frames"
    frames.mkdir()
    for index, height in enumerate([48, 48, 40]):  # the third frame has another size: decoding fails there
        Image.fromarray(np.full((height, 64, 3), 100, np.uint8)).save(frames / f"{index:05d}.png")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.png").write_bytes(b"earlier result")
    assert _segment(frames, checkpoint, out, "--overlay", "--overwrite") == 2
    assert "00002.png" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["keep.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames", "out"]  # temp folder removed
