"""Video/image readers and writers: lazy decoding, palette PNGs, MP4, overlays, atomic output folders."""

from __future__ import annotations

import av
import numpy as np
import pytest
from PIL import Image

from yofo.errors import InputError, VideoError
from yofo.video_io import (
    DAVIS_PALETTE,
    Mp4Writer,
    atomic_output_dir,
    open_video,
    render_overlay,
    write_palette_png,
)


def _colour_frames(count: int, height: int, width: int) -> list[np.ndarray]:
    """Flat frames whose grey level encodes the frame index (robust to lossy coding)."""
    return [np.full((height, width, 3), 20 + 20 * i, dtype=np.uint8) for i in range(count)]


@pytest.fixture
def mp4(tmp_path):
    path = tmp_path / "clip.mp4"
    with Mp4Writer(path, fps=10) as writer:
        for frame in _colour_frames(6, 48, 64):
            writer.write(frame)
    return path


def test_palette_is_davis():
    assert DAVIS_PALETTE.shape == (256, 3)
    assert DAVIS_PALETTE[:4].tolist() == [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0]]
    assert DAVIS_PALETTE[255].tolist() == [224, 224, 192]  # DAVIS's void colour


def test_palette_png_round_trip(tmp_path):
    ids = np.zeros((7, 9), dtype=np.int64)
    ids[1:3, 2:5], ids[4:, :3] = 1, 255
    path = tmp_path / "sub" / "mask.png"
    write_palette_png(path, ids)
    with Image.open(path) as image:
        assert image.mode == "P"
        assert np.array_equal(np.asarray(image), ids)
        assert image.getpalette()[3:6] == [128, 0, 0]
    assert [p.name for p in path.parent.iterdir()] == ["mask.png"]  # no temp file left


@pytest.mark.parametrize(
    "ids", [np.zeros((4, 4), np.float32), np.zeros((2, 4, 4), np.uint8), np.full((4, 4), 256)]
)
def test_palette_png_rejects_bad_ids(tmp_path, ids):
    with pytest.raises(InputError):
        write_palette_png(tmp_path / "x.png", ids)


def test_mp4_round_trip_and_stride(mp4):
    source = open_video(mp4)
    assert (source.kind, len(source), source.size) == ("video", 6, (48, 64))
    assert source.fps == pytest.approx(10)
    named = list(source.iter_named())
    assert [name for name, _ in named] == [f"{i:05d}" for i in range(6)]
    for (_, frame), expected in zip(named, _colour_frames(6, 48, 64)):
        assert frame.dtype == np.uint8 and frame.shape == (48, 64, 3)
        assert abs(float(frame.mean()) - float(expected.mean())) < 6
    again = [frame for frame in source]  # a source can be iterated again
    assert np.array_equal(again[3], named[3][1])

    strided = open_video(mp4, stride=4)
    assert len(strided) == 2 and strided.fps == pytest.approx(2.5)
    assert [name for name, _ in strided.iter_named()] == ["00000", "00004"]


@pytest.mark.parametrize("degrees, corner", [(90, (-1, 0)), (-90, (0, -1)), (180, (-1, -1))])
def test_display_rotation_is_applied(tmp_path, degrees, corner):
    """A portrait phone video: frames stored 32×64 with a display matrix; the top-left marker moves with it."""
    path = tmp_path / "portrait.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=5)
        stream.width, stream.height, stream.pix_fmt = 64, 32, "yuv420p"
        stream.set_display_rotation(degrees)  # counter-clockwise
        stored = np.zeros((32, 64, 3), np.uint8)
        stored[:8, :8] = 255
        for _ in range(2):
            for packet in stream.encode(av.VideoFrame.from_ndarray(stored, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    source = open_video(path)
    shown = (32, 64) if degrees == 180 else (64, 32)
    assert source.size == shown
    frames = list(source)
    assert len(frames) == 2 and frames[0].shape == (*shown, 3)
    rows = slice(0, 8) if corner[0] == 0 else slice(-8, None)
    cols = slice(0, 8) if corner[1] == 0 else slice(-8, None)
    assert frames[0][rows, cols].mean() > 200 and frames[0].mean() < 40


def test_mp4_writer_pads_odd_sizes_and_is_atomic(tmp_path):
    path = tmp_path / "odd.mp4"
    with Mp4Writer(path, fps=30000 / 1001) as writer:  # NTSC rate as a float from a container
        assert writer.rate.denominator == 1001
        for frame in _colour_frames(3, 45, 63):
            writer.write(frame)
        with pytest.raises(InputError):
            writer.write(np.zeros((46, 64, 3), np.uint8))  # size differs from the first frame
        assert not path.exists()  # only a temp file while writing
    assert open_video(path).size == (46, 64)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["odd.mp4"]

    failed = tmp_path / "failed.mp4"
    with pytest.raises(RuntimeError), Mp4Writer(failed) as writer:
        writer.write(np.zeros((8, 8, 3), np.uint8))
        raise RuntimeError("stop")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["odd.mp4"]


def test_folder_natural_order_stride_and_errors(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for name, value in [("f10.png", 30), ("f2.jpg", 20), ("f1.png", 10), ("notes.txt", 0)]:
        if name.endswith(".txt"):
            (folder / name).write_text("not a frame")
        else:
            Image.fromarray(np.full((5, 7, 3), value, np.uint8)).save(folder / name)
    source = open_video(folder)
    assert (source.kind, len(source), source.size, source.fps) == ("folder", 3, (5, 7), None)
    assert [name for name, _ in source.iter_named()] == ["f1", "f2", "f10"]
    assert [name for name, _ in open_video(folder, stride=2).iter_named()] == ["f1", "f10"]

    Image.fromarray(np.zeros((6, 7, 3), np.uint8)).save(folder / "f11.png")
    with pytest.raises(VideoError, match="f11.png"):
        list(open_video(folder))
    Image.fromarray(np.zeros((5, 7, 3), np.uint8)).save(folder / "f1.jpg")
    with pytest.raises(VideoError, match="'f1'"):
        open_video(folder)


def test_single_image_rgb(tmp_path):
    path = tmp_path / "gray.png"
    Image.fromarray(np.full((4, 6), 77, np.uint8)).save(path)
    source = open_video(path)
    [(name, frame)] = list(source.iter_named())
    assert (source.kind, name, frame.shape, int(frame[0, 0, 2])) == ("image", "gray", (4, 6, 3), 77)


def test_bad_inputs(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "corrupt.mp4").write_bytes(b"\x00not a video" * 50)
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8garbage")
    cases = {
        "missing.mp4": "no such file",
        "empty": "no frames",
        "corrupt.mp4": "not a readable video",
        "notes.txt": "unsupported file type",
        "broken.jpg": "cannot read image",
    }
    for name, message in cases.items():
        with pytest.raises(VideoError, match=message):
            open_video(tmp_path / name)
    with pytest.raises(InputError, match="stride"):
        open_video(tmp_path / "empty", stride=0)


def test_render_overlay_colours_objects_and_draws_legend():
    frame = np.full((120, 200, 3), 200, dtype=np.uint8)
    ids = np.zeros((120, 200), dtype=np.uint8)
    ids[80:110, 150:190] = 2
    out = render_overlay(frame, ids, ["a swan", "the green object"])
    assert out.shape == frame.shape and out.dtype == np.uint8
    assert out[95, 170].tolist() == [100, 164, 100]  # half frame, half palette green (0, 128, 0)
    assert np.array_equal(out[100, 20], frame[100, 20])  # background away from the legend untouched
    assert not np.array_equal(out[:20, :60], frame[:20, :60])  # legend drawn top-left
    with pytest.raises(InputError):
        render_overlay(frame, ids[:10], ["a swan"])


@pytest.mark.parametrize("size, sentences", [((96, 160), 1), ((96, 160), 2), ((480, 854), 2), ((480, 854), 4)])
def test_overlay_legend_is_a_strip_that_scales_with_the_frame(size, sentences):
    frame = np.full((*size, 3), 200, dtype=np.uint8)
    out = render_overlay(frame, np.zeros(size, np.uint8), ["the square moving left"] * sentences)
    rows = np.flatnonzero((out != frame).any(axis=(1, 2)))
    assert rows[0] == 0 and rows[-1] + 1 <= size[0] / 4  # the legend: at most a quarter of the height
    if size[0] == 480:  # large frames get larger text than the 96-pixel ones (7-10 px there)
        assert rows[-1] + 1 >= 480 / 32 * (1.5 * sentences)


def test_output_folder_is_locked_while_written(tmp_path):
    target = tmp_path / "out"
    with atomic_output_dir(target) as temp:
        (temp / "a.txt").write_text("first")
        assert (tmp_path / ".out.lock").is_file()
        with pytest.raises(InputError, match="another run is writing it"):
            with atomic_output_dir(target):
                pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # lock released and removed
    assert [p.name for p in target.iterdir()] == ["a.txt"]
    (tmp_path / ".out.lock").write_text("")  # left by a killed run: no process holds it
    with atomic_output_dir(target) as temp:
        (temp / "b.txt").write_text("second")
    assert [p.name for p in target.iterdir()] == ["b.txt"]


def test_output_folder_without_overwrite_is_kept(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    with atomic_output_dir(target, overwrite=False) as temp:  # empty: used
        (temp / "a.txt").write_text("first")
    with pytest.raises(InputError, match="pass --overwrite"):
        with atomic_output_dir(target, overwrite=False):
            pass
    with pytest.raises(InputError, match="not empty"):  # filled while the run wrote elsewhere
        with atomic_output_dir(tmp_path / "late", overwrite=False) as temp:
            (temp / "mine.txt").write_text("mine")
            (tmp_path / "late").mkdir()
            (tmp_path / "late" / "theirs.txt").write_text("theirs")
    assert [p.name for p in (tmp_path / "late").iterdir()] == ["theirs.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["late", "out"]
    assert [p.name for p in target.iterdir()] == ["a.txt"]


def test_atomic_output_dir_replaces_only_on_success(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")

    with pytest.raises(RuntimeError), atomic_output_dir(target) as temp:
        (temp / "half.txt").write_text("half")
        raise RuntimeError("stop")
    assert sorted(p.name for p in target.iterdir()) == ["old.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temp folder left

    with atomic_output_dir(target) as temp:
        assert temp.parent == tmp_path and not (temp / "old.txt").exists()
        (temp / "new.txt").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]

    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="not a folder"):
        with atomic_output_dir(tmp_path / "file"):
            pass
