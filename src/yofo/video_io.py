"""Video and image input/output: lazy frame readers, palette PNGs, MP4 writing, overlays, atomic output folders.

Readers never hold a whole video in memory: a :class:`VideoSource` decodes one frame at a time each time it
is iterated, so it can be iterated again (e.g. once per pass of a benchmark).

    source = open_video("clip.mp4", stride=2)      # or a folder of jpg/png frames, or one image
    for name, frame in source.iter_named():        # frame: uint8 RGB (H, W, 3)
        ...
    write_palette_png("out/00000.png", ids)        # ids: uint8 (H, W), 0 = background, k = object k

Predictions and annotations are palette PNGs with the DAVIS palette (DESIGN §3), so the official DAVIS and
Ref-YouTube-VOS tools read them unchanged.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Sequence

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFont, UnidentifiedImageError

from yofo.errors import InputError, VideoError
from yofo.files import atomic_write, exclusive_lock, temp_beside, umask

VIDEO_EXTENSIONS = (".mp4", ".mov", ".avi", ".webm", ".mkv")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
# Encoders tried in order: H.264 plays everywhere; MPEG-4 part 2 is in every FFmpeg build.
MP4_ENCODERS = ("libx264", "h264", "mpeg4")


def _davis_palette() -> np.ndarray:
    """The DAVIS / PASCAL VOC colour map: (256, 3) uint8, id 0 black, 1 red, 2 green, 3 yellow, ..."""
    palette = np.zeros((256, 3), dtype=np.uint8)
    for index in range(256):
        value, r, g, b = index, 0, 0, 0
        for bit in range(8):  # spread the id's bits over the high bits of the three channels
            r |= ((value >> 0) & 1) << (7 - bit)
            g |= ((value >> 1) & 1) << (7 - bit)
            b |= ((value >> 2) & 1) << (7 - bit)
            value >>= 3
        palette[index] = (r, g, b)
    return palette


DAVIS_PALETTE = _davis_palette()


def _natural_key(name: str) -> list:
    """Sort key that orders ``frame2`` before ``frame10``."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


@contextlib.contextmanager
def _open_image(path: Path) -> Iterator[Image.Image]:
    """``Image.open`` whose failures (not an image, truncated data) become one-line VideoErrors."""
    try:
        with Image.open(path) as image:
            yield image
    except (UnidentifiedImageError, OSError) as err:
        raise VideoError(f"{path}: cannot read image ({err.__class__.__name__})") from None


class VideoSource:
    """Lazy frames of a video file, a folder of frames or a single image.

    Use :func:`open_video` to make one. Iterating yields uint8 RGB frames (H, W, 3), decoded one at a time;
    :meth:`iter_named` also yields each frame's name (file stem for folders and images, the zero-padded
    index in the original video for video files, so names are stable under a stride).

    Attributes:
        path: the input path.
        kind: ``"video"``, ``"folder"`` or ``"image"``.
        stride: keep every ``stride``-th frame.
        fps: frames per second after the stride, or None when unknown (folders, images).
        size: (H, W) of the frames, or None when unknown.
        num_frames: number of frames after the stride, or None when the container does not say.
    """

    def __init__(
        self,
        path: Path,
        kind: str,
        stride: int,
        files: Sequence[Path] = (),
        fps: float | None = None,
        size: tuple[int, int] | None = None,
        num_frames: int | None = None,
    ) -> None:
        self.path = path
        self.kind = kind
        self.stride = stride
        self.fps = fps
        self.size = size
        self.num_frames = num_frames
        self._files = list(files)

    def __len__(self) -> int:
        if self.num_frames is None:
            raise TypeError(f"{self.path}: the number of frames is not known before decoding")
        return self.num_frames

    def __iter__(self) -> Iterator[np.ndarray]:
        for _, frame in self.iter_named():
            yield frame

    def iter_named(self) -> Iterator[tuple[str, np.ndarray]]:
        """Yield ``(name, frame)`` with frame uint8 RGB (H, W, 3); VideoError on undecodable data."""
        if self.kind == "video":
            yield from self._iter_video()
            return
        for file in self._files:
            with _open_image(file) as image:
                frame = np.asarray(image.convert("RGB"))
            if self.size is not None and frame.shape[:2] != self.size:
                raise VideoError(
                    f"{file}: frame is {frame.shape[1]}x{frame.shape[0]}, expected "
                    f"{self.size[1]}x{self.size[0]} like the first frame"
                )
            yield file.stem, frame

    def _iter_video(self) -> Iterator[tuple[str, np.ndarray]]:
        try:
            with av.open(str(self.path)) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"  # frame-level threads: decoding keeps up with the model
                for index, frame in enumerate(container.decode(stream)):
                    if index % self.stride == 0:
                        yield f"{index:05d}", _upright(frame)
        except av.error.FFmpegError as err:
            raise VideoError(f"{self.path}: cannot decode video ({str(err).splitlines()[0]})") from None


def _upright(frame: av.VideoFrame) -> np.ndarray:
    """uint8 RGB (H, W, 3) as the video is meant to be shown: the container's display rotation applied.

    Phones store portrait videos landscape with a display matrix; its rotation (degrees counter-clockwise,
    ``VideoFrame.rotation``) is applied in quarter turns. Flips in the matrix are not applied.
    """
    image = frame.to_ndarray(format="rgb24")
    turns = round(frame.rotation / 90) % 4
    return np.ascontiguousarray(np.rot90(image, turns)) if turns else image


def open_video(path: str | os.PathLike, stride: int = 1) -> VideoSource:
    """Open a video file (mp4/mov/avi/webm/mkv), a folder of jpg/png frames or a single jpg/png image.

    Only the header (or the first image's header) and, for a video, its first frame (for the display
    rotation) are read here; frames are decoded when iterated. Video frames come upright: a display
    rotation stored by the container (portrait phone videos) is applied.

    Args:
        path: the input.
        stride: keep every ``stride``-th frame (>= 1).

    Raises:
        VideoError: missing path, unsupported file type, a folder without frames, a file that is not a
            video or image.
        InputError: stride < 1.
    """
    path = Path(path)
    if stride < 1:
        raise InputError(f"stride: {stride} must be >= 1")
    if not path.exists():
        raise VideoError(f"{path}: no such file or folder")
    if path.is_dir():
        files = sorted(
            (p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS),
            key=lambda p: _natural_key(p.name),
        )
        if not files:
            raise VideoError(f"{path}: folder has no frames (expected {', '.join(IMAGE_EXTENSIONS)} files)")
        stems = [p.stem for p in files]
        if len(set(stems)) != len(stems):
            duplicate = next(s for s in stems if stems.count(s) > 1)
            raise VideoError(f"{path}: two frames are named '{duplicate}' (e.g. .jpg and .png)")
        files = files[::stride]
        with _open_image(files[0]) as first:  # reads the header only
            return VideoSource(path, "folder", stride, files, size=(first.height, first.width), num_frames=len(files))
    suffix = path.suffix.lower()
    if suffix in IMAGE_EXTENSIONS:
        with _open_image(path) as image:
            return VideoSource(path, "image", stride, [path], size=(image.height, image.width), num_frames=1)
    if suffix not in VIDEO_EXTENSIONS:
        raise VideoError(
            f"{path}: unsupported file type '{path.suffix}'; expected a video "
            f"({', '.join(VIDEO_EXTENSIONS)}), an image ({', '.join(IMAGE_EXTENSIONS)}) or a folder of frames"
        )
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoError(f"{path}: has no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
            fps = float(rate) / stride if rate else None
            size = (stream.codec_context.height, stream.codec_context.width)
            total = stream.frames or None  # 0 when the container does not record it
            first = next(container.decode(stream), None)
            if first is not None and round(first.rotation / 90) % 2:  # shown a quarter turn round
                size = size[::-1]
    except av.error.FFmpegError as err:
        raise VideoError(f"{path}: not a readable video ({str(err).splitlines()[0]})") from None
    num_frames = -(-total // stride) if total else None
    return VideoSource(path, "video", stride, fps=fps, size=size if min(size) > 0 else None, num_frames=num_frames)


def write_palette_png(path: str | os.PathLike, ids: np.ndarray) -> None:
    """Write object ids as a palette PNG with the DAVIS palette, atomically.

    Args:
        path: destination ``.png``.
        ids: integer array (H, W) with values in 0..255 (0 background, k object k, 255 void).
    """
    ids = np.asarray(ids)
    if ids.ndim != 2 or not (np.issubdtype(ids.dtype, np.integer) or ids.dtype == bool):
        raise InputError(f"ids: expected an integer array (H, W), got {ids.dtype} of shape {ids.shape}")
    if ids.size and (ids.min() < 0 or ids.max() > 255):
        raise InputError(f"ids: values must be in 0..255, got {ids.min()}..{ids.max()}")
    image = Image.fromarray(ids.astype(np.uint8), mode="P")
    image.putpalette(DAVIS_PALETTE.tobytes())
    path = Path(path)
    atomic_write(path, lambda temp: image.save(temp, format="PNG"), ".png")


class Mp4Writer:
    """Write uint8 RGB frames (H, W, 3) to an H.264 (or MPEG-4 part 2) ``.mp4``, atomically.

    The file appears at ``path`` only when :meth:`close` succeeds (use as a context manager). All frames must
    have the size of the first; odd sizes are padded by one edge pixel because yuv420p needs even sizes.

        with Mp4Writer("overlay.mp4", fps=24) as writer:
            for frame in frames:
                writer.write(frame)
    """

    def __init__(self, path: str | os.PathLike, fps: float = 25.0) -> None:
        self.path = Path(path)
        self.rate = Fraction(fps).limit_denominator(1001)  # 29.97 -> 30000/1001
        if self.rate <= 0:
            raise InputError(f"fps: {fps} must be positive")
        self._temp = temp_beside(self.path, ".mp4")
        self._container = av.open(str(self._temp), mode="w", format="mp4")
        self._stream: av.VideoStream | None = None
        self._size: tuple[int, int] | None = None
        self.codec: str | None = None

    def _open_stream(self, height: int, width: int) -> None:
        for name in MP4_ENCODERS:
            try:
                stream = self._container.add_stream(name, rate=self.rate)
            except (ValueError, av.error.FFmpegError):  # encoder missing from this FFmpeg build
                continue
            stream.width, stream.height = width + width % 2, height + height % 2
            stream.pix_fmt = "yuv420p"
            if name == "mpeg4":
                stream.bit_rate = 8_000_000  # mpeg4's default 200 kb/s smears mask edges
            else:
                stream.options = {"crf": "20", "preset": "veryfast"}
            self._stream, self._size, self.codec = stream, (height, width), name
            return
        raise VideoError(f"{self.path}: no MP4 encoder available (tried {', '.join(MP4_ENCODERS)})")

    def write(self, frame: np.ndarray) -> None:
        """Append one uint8 RGB frame (H, W, 3)."""
        frame = np.asarray(frame)
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise InputError(f"frame: expected uint8 (H, W, 3), got {frame.dtype} of shape {frame.shape}")
        if self._stream is None:
            self._open_stream(*frame.shape[:2])
        if frame.shape[:2] != self._size:
            raise InputError(f"frame: size {frame.shape[:2]} differs from the first frame's {self._size}")
        pad = ((0, frame.shape[0] % 2), (0, frame.shape[1] % 2), (0, 0))
        video_frame = av.VideoFrame.from_ndarray(np.pad(frame, pad, mode="edge"), format="rgb24")
        for packet in self._stream.encode(video_frame):
            self._container.mux(packet)

    def close(self) -> None:
        """Flush the encoder and move the file into place."""
        try:
            if self._stream is None:
                raise VideoError(f"{self.path}: no frames were written")
            for packet in self._stream.encode(None):
                self._container.mux(packet)
            self._container.close()
            os.replace(self._temp, self.path)
        finally:
            self.abort()

    def abort(self) -> None:
        """Discard the partial file (called by :meth:`close` and on errors inside ``with``)."""
        with contextlib.suppress(Exception):
            self._container.close()
        self._temp.unlink(missing_ok=True)

    def __enter__(self) -> "Mp4Writer":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def render_overlay(frame: np.ndarray, ids: np.ndarray, labels: Sequence[str], alpha: float = 0.5) -> np.ndarray:
    """Colour the objects of a frame and draw a legend of the sentences.

    Args:
        frame: uint8 RGB (H, W, 3).
        ids: integer (H, W); 0 background, k = object k in DAVIS palette colours.
        labels: labels[k - 1] names object k (the legend lists all of them, even objects absent here).
        alpha: opacity of the mask colours.

    Returns:
        uint8 RGB (H, W, 3).
    """
    frame = np.asarray(frame)
    ids = np.asarray(ids)
    if ids.shape != frame.shape[:2]:
        raise InputError(f"ids: shape {ids.shape} differs from the frame's {frame.shape[:2]}")
    colours = DAVIS_PALETTE[ids].astype(np.float32)
    blended = np.where((ids > 0)[..., None], (1 - alpha) * frame + alpha * colours, frame)
    image = Image.fromarray(blended.round().astype(np.uint8))
    _draw_legend(image, labels)
    return np.asarray(image)


def _draw_legend(image: Image.Image, labels: Sequence[str]) -> None:
    """Draw a box per sentence (palette colour + text) in the top-left corner, in place."""
    if not labels:
        return
    draw = ImageDraw.Draw(image, "RGBA")
    # 1/32 of the height (at least 10 px), smaller where the legend would take more than a quarter of the
    # frame's height (its height is about (1.5 K + 0.5) font sizes), but never below 7 px
    font_size = max(7, min(max(10, image.height // 32), int(image.height / 4 / (1.5 * len(labels) + 0.5))))
    font = ImageFont.load_default(size=font_size)
    margin, swatch = font_size // 2, font_size
    max_width = image.width - 3 * margin - swatch
    lines = []
    for label in labels:
        text = label
        while text and draw.textlength(text, font=font) > max_width:  # ellipsise sentences wider than the frame
            text = text[:-2] + "…" if len(text) > 1 else ""
        lines.append(text)
    line_height = font_size + margin
    width = max(draw.textlength(t, font=font) for t in lines) + swatch + 3 * margin
    height = len(lines) * line_height + margin
    draw.rectangle((0, 0, width, height), fill=(0, 0, 0, 140))
    for k, text in enumerate(lines, start=1):
        top = margin + (k - 1) * line_height
        colour = tuple(int(c) for c in DAVIS_PALETTE[k])
        draw.rectangle((margin, top, margin + swatch, top + swatch), fill=colour)
        draw.text((2 * margin + swatch, top), text, fill=(255, 255, 255), font=font)


@contextlib.contextmanager
def atomic_output_dir(path: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Build an output folder in a temporary folder beside it; move it into place only on success.

    An existing folder at ``path`` is replaced when the block succeeds and left untouched when it fails
    (an exception or Ctrl-C), so an output folder is never left half-written. While the block runs, the
    lock file ``.<name>.lock`` beside the folder is held (:func:`yofo.files.exclusive_lock`): a second run
    into the same folder fails at once instead of both reporting success with only the last one's result.

    Args:
        path: the output folder.
        overwrite: replace an existing non-empty folder; False refuses one (an empty one is always used).

    Yields:
        the temporary folder to write into.

    Raises:
        InputError: ``path`` exists and is not a folder, is not empty (without ``overwrite``), or another
            run is writing it.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"{path}: output exists and is not a folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(path.parent / f".{path.name}.lock", f"{path}: output folder"):
        if not overwrite:
            _refuse_non_empty(path)
        temp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        os.chmod(temp, 0o777 & ~umask())  # mkdtemp's 0700 would make the output private to its writer
        try:
            yield temp
            if not overwrite:  # filled meanwhile by something that takes no lock
                _refuse_non_empty(path)
        except BaseException:
            shutil.rmtree(temp, ignore_errors=True)
            raise
        old = None
        if path.exists():  # a folder cannot be os.replace'd over a non-empty one: swap it aside first
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, old / path.name)
        os.replace(temp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def _refuse_non_empty(path: Path) -> None:
    if path.is_dir() and any(path.iterdir()):
        raise InputError(f"{path}: output folder exists and is not empty; pass --overwrite to replace it")
