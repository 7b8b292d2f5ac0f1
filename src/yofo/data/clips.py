"""Training clips: T frames of one video (or T warped copies of one image) with one expression's masks.

    dataset = ClipDataset(cfg, seed=0)         # cfg: the full config (uses cfg.data, cfg.model.input_size)
    item = dataset[step * batch_size + k]      # a pure function of (seed, index)
    item["frames"]  # float32 (T, 3, H, W) in [0, 1]
    item["masks"]   # float32 (T, 1, H, W), 1 on the referred object
    item["valid"]   # float32 (T, 1, H, W), 0 on void, padding, erased and out-of-image pixels
    item["text"], item["source"]              # "ytvos:<video>:<exp_id>", "refcoco:<image>:<ref>:<sent>"
    item["previous"]  # with data.motion_history: float32 (T, P, 3, H, W), the P = window − 1 frames before each

Sampling (paper §4.1, brief §2.7 and §7.12–13): a dataset is chosen by its weight, then an expression
uniformly within it. Video clips take T frames in temporal order, distinct when possible, from a window of
``max_gap + 1`` consecutive annotated frames; a draw where the target is absent from every frame is redrawn
(a few times). Image clips repeat the image T times, each copy with its own random affine.

Frames and masks are resized to fit inside ``model.input_size`` keeping their aspect ratio and padded
right/bottom to it, as :class:`yofo.predictor.VideoSegmenter` does at inference (there to a multiple of 32):
the padding has the ImageNet mean colour (zero after normalisation, the inference filler) and is void for
the loss. Frames of the input size's aspect ratio are used as they are.

Every index has its own generator, ``numpy.random.Generator(PCG64([seed, index]))``, used for every choice
including the augmentation, so an item never depends on which items were drawn before. That makes
training resumable from a step count and shardable over DDP ranks (rank r takes indices r, r + W, ...).

With ``data.motion_history`` (ours) and motion-aware feature mining over W frames, each item also holds the W − 1
video frames before each of its frames (the first frame repeated before a video's start, as in streaming;
an image clip's frames are their own past: a still picture), augmented exactly as that frame. They only feed
the motion ring buffer (:meth:`yofo.model.yofo.YOFO.forward`'s ``previous``), so that a frame drawn with a
gap still compares with the frame before it, as at inference. The draw is unchanged: the same generator
calls, the same frames, masks and sentences. Without motion-aware FM the switch does nothing.

With ``data.pair_expressions``, items 2g and 2g+1 share the generator ``PCG64([seed, g])``: the same video,
frames and augmentation, but item 2g+1 takes an expression of another object of the video (of the same
object when the video has one; an image keeps its object). The two differ only by the sentence, so the
batch itself shows that the sentence decides the mask; batches should then hold both items of a pair
(an even batch size per process).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from typing import Any, Callable, Sequence

import numpy as np
import torch
from omegaconf import DictConfig
from torch.utils.data import Dataset

from yofo.data.augment import augment_clip
from yofo.data.load import dataset_specs, load_dataset
from yofo.data.records import (
    VOID, ImageRef, Video, fit_within, read_frame, read_mask, refuse_problems, resize_labels
)
from yofo.errors import ConfigError, DatasetError

_REDRAWS = 5  # redraws of a video clip whose frames all miss the target


def mean_colour(mean: Sequence[float]) -> np.ndarray:
    """The uint8 RGB colour of an encoder's normalisation mean: the padding colour, 0 once normalised."""
    return np.round(np.asarray(mean, dtype=np.float64) * 255).astype(np.uint8)


# "auto" workers stop here: each holds its own frame cache, and a batch of 4 clips rarely needs more
MAX_AUTO_WORKERS = 8


def loader_workers(value: int | str, local_processes: int = 1) -> int:
    """DataLoader workers for ``data.num_workers``: an int >= 0, or ``"auto"``.

    ``auto``: the CPUs this process may run on, shared among the ``local_processes`` training processes of
    the machine, minus one for each training loop itself, capped at :data:`MAX_AUTO_WORKERS`.

    Raises:
        ConfigError: anything else.
    """
    if value == "auto":
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        return max(0, min(MAX_AUTO_WORKERS, cpus // max(1, local_processes) - 1))
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise ConfigError(f"data.num_workers: {value!r} must be an integer >= 0 or 'auto'")


def pad_to(array: np.ndarray, size: tuple[int, int], fill: int | np.ndarray) -> np.ndarray:
    """Pad ``array`` (h, w) or (h, w, C) right and bottom to ``size`` = (H, W) with ``fill`` (per channel or not)."""
    if array.shape[:2] == tuple(size):
        return array
    out = np.empty((*size, *array.shape[2:]), dtype=array.dtype)
    out[...] = fill
    out[: array.shape[0], : array.shape[1]] = array
    return out


class _Cache:
    """A least-recently-used cache of arrays bounded by total bytes."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._items: OrderedDict[Any, np.ndarray] = OrderedDict()

    def get(self, key: Any, load: Callable[[], np.ndarray]) -> np.ndarray:
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        value = load()
        if value.nbytes <= self.max_bytes:
            self._items[key] = value
            self.bytes += value.nbytes
            while self.bytes > self.max_bytes:
                self.bytes -= self._items.popitem(last=False)[1].nbytes
        return value


class ClipDataset(Dataset):
    """Map-style dataset of augmented training clips; see the module docstring.

    Args:
        cfg: the full config. ``cfg.data.root`` (one Ref-YouTube-VOS-layout folder, split train) takes
            precedence over ``cfg.data.datasets`` (several :class:`yofo.config.DatasetSpec` with weights).
        seed: base seed; item ``i`` is a function of ``(seed, i)`` only.
        length: what ``len()`` reports (the sampler decides how many items are drawn).

    Raises:
        DatasetError: no dataset configured, unset or missing root, unreadable files, a video with a problem
            its reader found (a gap in the frame numbering, ...), or a dataset without any expression that has
            an object id and a masked frame.
    """

    def __init__(self, cfg: DictConfig, seed: int, length: int = 10**9) -> None:
        data = cfg.data
        self.seed = int(seed)
        self.length = int(length)
        self.size = (int(cfg.model.input_size[0]), int(cfg.model.input_size[1]))
        self.pad_colour = mean_colour(cfg.model.image_encoder.mean)
        self.num_frames = int(data.num_frames)
        self.max_gap = int(data.max_gap)
        self.pair_expressions = bool(data.pair_expressions)
        window = int(cfg.model.fm.motion.window)
        self.history = window - 1 if data.motion_history and window >= 2 else 0  # past frames per frame
        self.augment = data.augment
        specs = dataset_specs(data)
        self.names: list[str] = []
        self.records: list[list[Video] | list[ImageRef]] = []
        self.samples: list[list[tuple[int, int]]] = []  # per dataset: (record index, expression index)
        for spec in specs:
            records = load_dataset(spec)
            refuse_problems(records)
            samples = [
                (r, e)
                for r, record in enumerate(records)
                for e, expression in enumerate(record.sentences if isinstance(record, ImageRef) else record.expressions)
                if expression.obj_id is not None
                and (isinstance(record, ImageRef) or any(path is not None for path in record.mask_paths))
            ]
            if not samples:
                raise DatasetError(f"{spec.root}: split '{spec.split}' has no expression with an object id and masks")
            self.names.append(spec.format)
            self.records.append(records)
            self.samples.append(samples)
        weights = np.array([spec.weight for spec in specs], dtype=np.float64)
        if (weights < 0).any() or weights.sum() <= 0:
            raise DatasetError(f"data.datasets: weights {weights.tolist()} must be >= 0 with a positive sum")
        self.weights = weights / weights.sum()
        self._cache = _Cache(int(data.cache_mb) * 2**20)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, Any]:
        # Clip tensors are small: intra-op threads cost more than they save (much more when the cores are
        # busy with the training step), so one item is built on one thread, as in DataLoader workers.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return self._item(index)
        finally:
            torch.set_num_threads(threads)

    def _item(self, index: int) -> dict[str, Any]:
        group, member = divmod(int(index), 2) if self.pair_expressions else (int(index), 0)
        rng = np.random.Generator(np.random.PCG64([self.seed, group]))
        which = int(rng.choice(len(self.weights), p=self.weights))
        record_index, expression_index = self.samples[which][rng.integers(len(self.samples[which]))]
        record = self.records[which][record_index]
        if isinstance(record, ImageRef):
            expression = record.sentences[expression_index]
            frames, masks, valid = self._image_clip(record, key=(which, record_index))
            source = f"{self.names[which]}:{record.image_id}:{record.ref_id}:{expression.exp_id}"
        else:
            anchor = record.expressions[expression_index]
            # both members draw the partner, so the generator is in the same state for the clip and augmentation
            partner = self._partner(record, anchor.obj_id, rng) if self.pair_expressions else anchor
            expression = partner if member else anchor
            frames, masks, valid = self._video_clip(record, anchor.obj_id, rng, target_id=expression.obj_id)
            source = f"{self.names[which]}:{record.name}:{expression.exp_id}"
        frames, masks, valid, text = augment_clip(
            frames, masks, valid, expression.text, rng, self.augment, from_image=isinstance(record, ImageRef)
        )
        item = {"frames": frames, "masks": masks, "valid": valid, "text": text, "source": source}
        if self.history:
            if frames.dim() == 5:  # (T, P + 1, 3, H, W): each frame last, after its P past frames
                item["frames"], item["previous"] = frames[:, -1], frames[:, :-1]
            else:  # an image: a still picture
                item["previous"] = frames.unsqueeze(1).repeat(1, self.history, 1, 1, 1)
        return item

    def _frame(self, path: Any) -> np.ndarray:
        return self._cache.get(
            ("frame", path), lambda: pad_to(read_frame(path, self.size), self.size, self.pad_colour)
        )

    def _mask(self, path: Any) -> np.ndarray:
        return self._cache.get(
            ("mask", path), lambda: pad_to(read_mask(path, self.size), self.size, VOID)
        )

    @staticmethod
    def _partner(video: Video, obj_id: int, rng: np.random.Generator) -> Any:
        """An expression of another object of ``video`` than ``obj_id`` (of ``obj_id`` when there is none)."""
        others = [e for e in video.expressions if e.obj_id is not None and e.obj_id != obj_id]
        others = others or [e for e in video.expressions if e.obj_id == obj_id]
        return others[int(rng.integers(len(others)))]

    def _video_clip(
        self, video: Video, obj_id: int, rng: np.random.Generator, target_id: int | None = None
    ) -> tuple[torch.Tensor, ...]:
        """Frames (T, 3, H, W), target (T, 1, H, W) and valid (T, 1, H, W) of a clip of ``video``.

        Frames are drawn so that ``obj_id`` appears; the target mask is that of ``target_id`` (default ``obj_id``).
        With ``data.motion_history`` the frames are (T, P + 1, 3, H, W): each frame after the P = W − 1 before it.
        """
        annotated = [t for t, path in enumerate(video.mask_paths) if path is not None]
        for _ in range(_REDRAWS):
            start = int(rng.integers(0, max(1, len(annotated) - self.max_gap)))
            window = annotated[start : start + self.max_gap + 1]
            chosen = np.sort(rng.choice(len(window), size=self.num_frames, replace=len(window) < self.num_frames))
            picked = [window[i] for i in chosen]
            ids = np.stack([self._mask(video.mask_paths[t]) for t in picked])
            if (ids == obj_id).any():
                break
        if self.history:  # frame t after t − W + 1 ... t − 1, the first frame repeated before the start
            images = np.stack([np.stack([self._frame(video.frame_paths[max(0, t - k)])
                                         for k in range(self.history, -1, -1)]) for t in picked])
        else:
            images = np.stack([self._frame(video.frame_paths[t]) for t in picked])
        return _to_tensors(images, ids == (obj_id if target_id is None else target_id), ids != VOID)

    def _image_clip(self, ref: ImageRef, key: tuple[int, int]) -> tuple[torch.Tensor, ...]:
        """One image and its mask repeated T times (the affine warp is part of the augmentation).
        ``key`` (dataset, record index) names the mask in the cache: ref ids repeat across datasets."""
        image = self._frame(ref.image_path)

        def load() -> np.ndarray:
            mask = ref.mask()
            return pad_to(resize_labels(mask, fit_within(*mask.shape, self.size)), self.size, VOID)

        ids = np.repeat(self._cache.get(("ref", key), load)[None], self.num_frames, axis=0)
        return _to_tensors(np.repeat(image[None], self.num_frames, axis=0), ids == 1, ids != VOID)


def _to_tensors(images: np.ndarray, target: np.ndarray, valid: np.ndarray) -> tuple[torch.Tensor, ...]:
    """uint8 (T, H, W, 3) or (T, P + 1, H, W, 3) and bool (T, H, W) arrays -> float tensors (T, 3, H, W) or
    (T, P + 1, 3, H, W), (T, 1, H, W), (T, 1, H, W)."""
    frames = torch.from_numpy(np.ascontiguousarray(images)).movedim(-1, -3).float().div_(255)
    masks = torch.from_numpy(target.astype(np.float32))[:, None]
    return frames, masks, torch.from_numpy(valid.astype(np.float32))[:, None]
