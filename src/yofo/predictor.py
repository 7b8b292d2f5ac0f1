"""The user's door: segment the objects that sentences describe in a video, offline or one frame at a time.

    import yofo
    model = yofo.load("checkpoints/yofo-synthetic.safetensors")
    segmenter = yofo.VideoSegmenter(model, device="cpu")
    masks = segmenter.segment("video.mp4", ["a black swan", "the duck on the left"])  # {text: bool (T, H, W)}

    segmenter.start(["a black swan"])          # streaming: memory stays flat however long the video
    for frame in frames:                       # uint8 RGB (H, W, 3)
        mask = segmenter.step(frame)["a black swan"]   # bool (H, W)

Pre-processing (fit into the model's input box keeping the aspect ratio, pad right/bottom to a multiple of 32,
ImageNet normalisation) and post-processing (un-pad, resize the logits back, threshold) live here, so the
model stays a pure module (STYLE: SAM's predictor). The K sentences of a session share the per-frame work
(image encoder, Φ, the image-only decoder branches; DESIGN §1): the model streams them as one state.

A model that knows only the synthetic benchmark (``yofo info``: trained on the yofo synthetic benchmark)
says so, once per segmenter, as a one-line warning of the ``yofo`` logger, when it is given footage that is
not from a ``yofo synth`` folder (:meth:`VideoSegmenter.check_footage`; :meth:`segment` checks paths).
"""

from __future__ import annotations

import json
import logging
import math
import os
from contextlib import nullcontext
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from yofo.data.records import fit_within
from yofo.data.synthetic import benchmark_root
from yofo.engine.distributed import resolve_device
from yofo.errors import InputError, VideoError
from yofo.model.yofo import YOFO, StreamState
from yofo.video_io import Mp4Writer, VideoSource, open_video, render_overlay, write_palette_png

Frames = str | os.PathLike | VideoSource | np.ndarray | Iterable[np.ndarray]
log = logging.getLogger(__name__)


def check_texts(texts: Sequence[str]) -> list[str]:
    """Return ``texts`` as a list after checking it is a non-empty list of distinct, non-blank sentences.

    Raises:
        InputError: naming the offending sentence.
    """
    if isinstance(texts, str) or not texts:
        raise InputError(f"texts: expected a non-empty list of sentences, got {texts!r}")
    texts = list(texts)
    for index, text in enumerate(texts, start=1):
        if not isinstance(text, str) or not text.strip():
            raise InputError(f"texts: sentence {index} is empty; expected a non-empty sentence")
    duplicates = sorted({text for text in texts if texts.count(text) > 1})
    if duplicates:
        raise InputError(f"texts: sentence {duplicates[0]!r} is given twice; results are keyed by sentence")
    return texts


def fit_size(height: int, width: int, box: Sequence[int]) -> tuple[tuple[int, int], tuple[int, int]]:
    """Size a frame is resized to and the padded size the model sees.

    The frame is scaled (up or down) to fit inside ``box`` = (H_box, W_box) keeping its aspect ratio, then
    padded right/bottom to multiples of 32 (the image encoder's stride). A 480×854 DAVIS frame in a
    480×864 box stays 480×854 and is padded to 480×864.

    Returns:
        ((resized_h, resized_w), (padded_h, padded_w)).
    """
    resized = fit_within(height, width, box)
    padded = (math.ceil(resized[0] / 32) * 32, math.ceil(resized[1] / 32) * 32)
    return resized, padded


def label_map(logits: np.ndarray, threshold: float = 0.0) -> np.ndarray:
    """Merge per-sentence logits into one id map: the highest-scoring sentence wins each pixel.

    Args:
        logits: float (K, H, W), sentence k-1 gives object id k.
        threshold: a pixel is background (0) where no sentence's logit exceeds it.

    Returns:
        uint8 (H, W) with values 0..K.
    """
    if logits.ndim != 3 or not 1 <= logits.shape[0] <= 255:
        raise InputError(f"logits: expected (K, H, W) with 1 <= K <= 255, got shape {logits.shape}")
    ids = logits.argmax(axis=0).astype(np.uint8) + 1
    ids[logits.max(axis=0) <= threshold] = 0
    return ids


class VideoSegmenter:
    """Segment the objects described by K sentences in a video with a YOFO model.

    Args:
        model: a :class:`yofo.model.yofo.YOFO`; it is moved to ``device`` and put in eval mode.
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or a torch.device;
            None keeps the model's device.
        threshold: masks are ``logit > threshold`` (0.0 is probability 0.5, brief §2.6).
        input_size: (H, W) box frames are fitted into; None uses the model's ``input_size``.
        channels_last: run the model in the channels-last memory format (the same function, faster on CPU;
            the model's weights are converted in place). None: on CPU only.
    """

    def __init__(
        self,
        model: YOFO,
        device: str | torch.device | None = None,
        threshold: float = 0.0,
        input_size: Sequence[int] | None = None,
        channels_last: bool | None = None,
    ) -> None:
        if device is None:
            self.device = next(model.parameters()).device
        else:
            self.device = resolve_device(device) if isinstance(device, str) else torch.device(device)
        if channels_last is None:
            channels_last = self.device.type == "cpu"
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.model = model.to(self.device, memory_format=self.memory_format).eval()
        self.threshold = float(threshold)
        self.input_size = tuple(input_size if input_size is not None else model.cfg.input_size)
        if len(self.input_size) != 2 or min(self.input_size) < 32:
            raise InputError(f"input_size: {list(self.input_size)} must be (H, W), both at least 32")
        self.texts: list[str] = []
        self._state: StreamState | None = None
        self._frame_size: tuple[int, int] | None = None
        self._warned = False

    @property
    def state(self) -> StreamState | None:
        """The model's stream state of the current video (memory FIFO, filters); None before :meth:`start`."""
        return self._state

    def check_footage(self, source: str | os.PathLike) -> str | None:
        """The notice for a synthetic-only model on footage that is not from the synthetic benchmark.

        ``source`` (a video, frame folder, image or dataset root) is the benchmark's when it lies inside a
        folder written by ``yofo synth`` (:func:`yofo.data.synthetic.benchmark_root`). The first notice of
        this segmenter is also logged as a warning (one line on stderr).

        Returns:
            the notice, or None when the model is not known to be synthetic-only or the footage is synthetic.
        """
        trained_on = self.model.trained_on
        if trained_on is None or not trained_on.synthetic_only or benchmark_root(source) is not None:
            return None
        notice = (f"{self.model.checkpoint} knows only the yofo synthetic benchmark's coloured shapes"
                  + ("" if trained_on.recorded else " (inferred, see `yofo info`)")
                  + f"; {Path(source).name} is not from that benchmark: expect poor or empty masks "
                  f"(README, \"Segment your own video\")")
        if not self._warned:
            log.warning(notice)
            self._warned = True
        return notice

    @torch.inference_mode()
    def start(self, texts: Sequence[str]) -> None:
        """Begin a video: encode the K sentences once and reset the model's memory.

        Raises:
            InputError: empty list, an empty sentence or a sentence given twice.
        """
        self.texts = check_texts(texts)
        self._state = self.model.start(self.model.encode_text(self.texts))
        self._frame_size = None

    @torch.inference_mode()
    def step_logits(self, frame: np.ndarray) -> np.ndarray:
        """Segment the next frame of the video begun by :meth:`start`.

        Args:
            frame: uint8 RGB (H, W, 3); every frame of a video has the size of the first.

        Returns:
            float32 logits (K, H, W) at the frame's resolution, sentence order as given to :meth:`start`.
        """
        if self._state is None:
            raise InputError("step: call start(texts) before the first frame")
        frame = np.asarray(frame)
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise InputError(f"frame: expected uint8 RGB (H, W, 3), got {frame.dtype} of shape {frame.shape}")
        if self._frame_size is None:
            self._frame_size = frame.shape[:2]
        elif frame.shape[:2] != self._frame_size:
            raise InputError(f"frame: size {frame.shape[:2]} differs from the video's first frame {self._frame_size}")
        resized, padded = fit_size(*self._frame_size, self.input_size)
        logits = self.model.step(self._preprocess(frame, resized, padded), self._state)  # (K, 1, Hp, Wp)
        return self._postprocess(logits[:, 0], resized).cpu().numpy()

    def step(self, frame: np.ndarray) -> dict[str, np.ndarray]:
        """Segment the next frame: ``{text: bool (H, W)}``, mask = logit > threshold."""
        logits = self.step_logits(frame)
        return {text: logits[k] > self.threshold for k, text in enumerate(self.texts)}

    def segment(self, frames: Frames, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """Segment a whole video.

        Args:
            frames: a path (video file, folder of frames, image), a :class:`VideoSource`, a uint8 array
                (T, H, W, 3) or an iterable of uint8 RGB frames (H, W, 3). Paths are decoded lazily.
            texts: K distinct sentences.

        Returns:
            ``{text: bool (T, H, W)}`` at the video's own resolution.
        """
        if isinstance(frames, (str, os.PathLike)):
            frames = open_video(frames)
        if isinstance(frames, VideoSource):
            self.check_footage(frames.path)
        elif isinstance(frames, np.ndarray) and frames.ndim != 4:
            raise InputError(f"frames: expected a uint8 array (T, H, W, 3), got shape {frames.shape}")
        self.start(texts)
        masks: list[list[np.ndarray]] = [[] for _ in self.texts]
        for frame in frames:
            logits = self.step_logits(frame)
            for k, per_text in enumerate(masks):
                per_text.append(logits[k] > self.threshold)
        if not masks[0]:
            raise InputError("frames: the video has no frames")
        return {text: np.stack(per_text) for text, per_text in zip(self.texts, masks)}

    def _preprocess(self, frame: np.ndarray, resized: tuple[int, int], padded: tuple[int, int]) -> Tensor:
        """uint8 (H, W, 3) -> normalised float (1, 3, Hp, Wp) on the model's device."""
        # torch.tensor copies: decoded frames may be read-only arrays, which from_numpy warns about
        image = torch.tensor(frame, device=self.device).permute(2, 0, 1)[None].float().div_(255)
        if image.shape[-2:] != resized:
            image = F.interpolate(image, size=resized, mode="bilinear", align_corners=False, antialias=True)
        # Pad after normalising: zeros are the encoder's mean colour, the most neutral filler for it.
        image = self.model.normalize(image)
        image = F.pad(image, (0, padded[1] - resized[1], 0, padded[0] - resized[0]))
        return image.contiguous(memory_format=self.memory_format)

    def _postprocess(self, logits: Tensor, resized: tuple[int, int]) -> Tensor:
        """(K, Hp, Wp) logits -> (K, H, W) float32 at the frame's size: un-pad, bilinear resize."""
        logits = logits[:, : resized[0], : resized[1]].float()
        if resized != self._frame_size:
            logits = F.interpolate(logits[None], size=self._frame_size, mode="bilinear", align_corners=False)[0]
        return logits


def segment_to_folder(
    segmenter: VideoSegmenter,
    frames: Iterable[tuple[str, np.ndarray]],
    texts: Sequence[str],
    folder: str | os.PathLike,
    overlay_fps: float | None = None,
    name: str = "the video",
) -> int:
    """Segment a video into ``folder``: what ``yofo segment`` and ``yofo serve`` write.

    Args:
        segmenter: the segmenter; :meth:`VideoSegmenter.start` is called here with ``texts``.
        frames: ``(name, uint8 RGB (H, W, 3))`` pairs, e.g. :meth:`yofo.video_io.VideoSource.iter_named`
            (wrapped in a progress bar by the caller).
        texts: K sentences; object k of the masks is sentence k.
        folder: an existing folder; gets ``<name>.png`` per frame (palette PNGs, 0 background, k object k,
            the highest logit where sentences overlap), ``sentences.json`` ({k: sentence}) and, with
            ``overlay_fps``, ``overlay.mp4`` (coloured masks and a legend at that frame rate).
        name: the video in error messages.

    Returns:
        the number of frames.

    Raises:
        VideoError: no frame could be decoded.
    """
    folder = Path(folder)
    segmenter.start(texts)
    (folder / "sentences.json").write_text(json.dumps({str(k): t for k, t in enumerate(segmenter.texts, 1)}, indent=1))
    count = 0
    with Mp4Writer(folder / "overlay.mp4", fps=overlay_fps) if overlay_fps else nullcontext() as writer:
        for frame_name, frame in frames:
            ids = label_map(segmenter.step_logits(frame), segmenter.threshold)
            write_palette_png(folder / f"{frame_name}.png", ids)
            if writer is not None:
                writer.write(render_overlay(frame, ids, segmenter.texts))
            count += 1
        if count == 0:
            raise VideoError(f"{name}: no frames could be decoded")
    return count
