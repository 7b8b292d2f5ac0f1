"""Training: the paper's two-stage recipe (DESIGN §2; brief §2.7, §4.3), exact resume, and DDP.

    from yofo.config import load_config
    from yofo.engine.train import train
    model = train(load_config("demo", ["data.root=synth"]), "runs/demo")

Schedule. Stage 1 runs ``stage1.epochs × iters_per_epoch`` steps with the image and text encoders frozen,
stage 2 ``stage2.epochs × iters_per_epoch`` steps with layer2-4 of the image encoder (and the text
transformer, when checkpoints store it) trained too; conv1, bn1 and layer1 stay frozen and BatchNorm
statistics stay fixed throughout (brief §2.7). Each stage starts a fresh Adam whose parameter groups run at
``lr × group_lr.<group>``; its MultiStepLR is stepped every iteration, with the milestones (epochs from the
stage start) converted to iterations.

Data. Step ``s`` trains on clips ``s·B … s·B+B−1`` of :class:`yofo.data.clips.ClipDataset` (B =
``train.batch_size``, the global batch); each clip is a pure function of (seed, index), so the data position
is the step count. Rank r of W takes positions r, r+W, …; the Lovász loss is pooled over the clips of a rank
and DistributedDataParallel averages the gradients.

Checkpoints. ``OUT/checkpoints/step_XXXXXXXX/`` receives ``model.safetensors`` and then
``train_state.pt`` (optimizer, scheduler, grad scaler, RNG, step; each file written atomically, the second
marking the pair complete), after which ``OUT/model.safetensors`` becomes a hard link to the new weights and
older step folders are removed. ``resume`` loads the newest complete pair, so a run killed at any moment
and resumed ends with exactly the weights of an uninterrupted run (on CPU, same thread count). A resume keeps
what the run learns: its model config, its data (as the checkpoint records it) and the train/data settings of
``OUT/config.yaml``; only where the data is, how fast the run goes and the length of stage 2 may change
(:data:`yofo.config.RESUME_MAY_CHANGE`).

Environment. The bits of the weights depend on the machine too: torch's CPU kernels, oneDNN and MKL pick
their code by the instruction set (AVX2, AVX-512, ...), and each sums in its own order. ``OUT/environment.json``
records, for every start of the run (the first and each resume), what decides that (:func:`environment`), so
that two runs whose sha256 differ can be told apart from a run that is not reproducible.
"""

from __future__ import annotations

import csv
import inspect
import json
import math
import os
import platform
import re
import shutil
import time
from pathlib import Path
from typing import Any, Iterator

import torch
from omegaconf import DictConfig, OmegaConf
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Sampler
from tqdm import tqdm

from yofo.config import GroupLrConfig, flatten_config, model_config_differences, run_config_differences
from yofo.data.clips import ClipDataset, loader_workers
from yofo.engine.checkpoint import (checkpoint_model_config, describe_datasets, load_state, read_metadata, save_model,
                                    training_data, training_metadata)
from yofo.engine.distributed import Distributed, init_distributed
from yofo.errors import CheckpointError, ConfigError, TrainingError
from yofo.files import atomic_write
from yofo.losses import label_loss, segmentation_loss
from yofo.model.yofo import YOFO, build_model

MODEL_FILE = "model.safetensors"
STATE_FILE = "train_state.pt"
METRICS_FILE = "metrics.csv"
ENVIRONMENT_FILE = "environment.json"
METRICS = ("step", "epoch", "stage", "loss", "lr", "clips_per_s", "elapsed")
_STEP_FOLDER = re.compile(r"step_(\d+)")

# Parameter name prefix -> group of GroupLrConfig, first match wins. None: never trained. The image
# encoder's stem (ResNet: conv1, bn1, layer1; Lite: the stages up to s4) is never trained either (LWL keeps
# conv1 and layer1 frozen in both stages, brief §2.7), unless train.freeze_stem is false.
_GROUPS: tuple[tuple[str, str | None], ...] = (
    ("meta_transfer.reg", "reg"),
    ("meta_transfer.phi.", "phi"),
    ("meta_transfer.phi_motion.", "feature_mining"),  # motion-aware FM's way into Φ starts at zero: FM's rate
    ("feature_mining.", "feature_mining"),
    ("text_encoder.proj.", "text_proj"),
    ("decoder.", "decoder"),
    ("image_encoder.", "image_encoder"),
    ("text_encoder.bert.", "text_encoder"),
)
_ENCODER_GROUPS = ("image_encoder", "text_encoder")


# ------------------------------------------------------------------------------------------ schedule
def stage_steps(train_cfg: DictConfig) -> tuple[int, int]:
    """Number of steps of stage 1 and stage 2: epochs × iterations per epoch."""
    return (train_cfg.stage1.epochs * train_cfg.iters_per_epoch, train_cfg.stage2.epochs * train_cfg.iters_per_epoch)


def clip_indices(step: int, batch_size: int, rank: int = 0, world_size: int = 1, overfit: int = 0) -> list[int]:
    """Dataset indices rank ``rank`` trains on at ``step`` (0-based): ``step·B + p`` for p = rank, rank+W, …

    With ``overfit = N > 0`` the indices wrap around to clips 0..N−1.
    """
    indices = [step * batch_size + position for position in range(rank, batch_size, world_size)]
    return [i % overfit for i in indices] if overfit else indices


class StepSampler(Sampler[list[int]]):
    """Batches of clip indices for steps ``start … end−1`` of one rank (see :func:`clip_indices`)."""

    def __init__(self, start: int, end: int, batch_size: int, rank: int, world_size: int, overfit: int = 0):
        self.start, self.end = start, end
        self.args = (batch_size, rank, world_size, overfit)

    def __iter__(self) -> Iterator[list[int]]:
        return (clip_indices(step, *self.args) for step in range(self.start, self.end))

    def __len__(self) -> int:
        return max(0, self.end - self.start)


def parameter_groups(
    model: YOFO, stage: DictConfig, freeze_stem: bool = True, deep_supervision: bool = False
) -> list[dict[str, Any]]:
    """Adam parameter groups of a stage; sets ``requires_grad`` so frozen parts cost no backward pass.

    Args:
        model: the network.
        stage: ``train.stage1`` or ``train.stage2`` (:class:`yofo.config.StageConfig`).
        freeze_stem: keep the image encoder's stem (``model.image_encoder.stem``: ResNet conv1, bn1, layer1)
            frozen even when encoders train.
        deep_supervision: train ``feature_mining.label_readout`` (``train.aux_weight > 0``); otherwise, unless
            ``model.decoder.label_skip`` uses it, it has no gradient and stays frozen.

    Returns:
        non-empty groups ``{"params", "lr", "name", "scale"}`` with ``lr = stage.lr × stage.group_lr[name]``.
    """
    store_text = model.cfg.text_encoder.store_weights
    members: dict[str, list[torch.nn.Parameter]] = {name: [] for name in GroupLrConfig.__dataclass_fields__}
    stem = tuple(f"image_encoder.{prefix}" for prefix in model.image_encoder.stem)
    for name, param in model.named_parameters():
        group = next((g for prefix, g in _GROUPS if name.startswith(prefix)), "")
        if name.startswith(stem) and freeze_stem:
            group = None
        if group == "":
            raise RuntimeError(f"parameter '{name}' belongs to no parameter group; add it to _GROUPS")
        # The transformer is trained only if checkpoints hold it: otherwise its training would be lost.
        trainable = group is not None and (
            group not in _ENCODER_GROUPS or (stage.train_encoders and (group != "text_encoder" or store_text))
        ) and (deep_supervision or model.cfg.decoder.label_skip or not name.startswith("feature_mining.label_readout."))
        param.requires_grad_(trainable)
        if trainable:
            members[group].append(param)
    scales = stage.group_lr
    return [
        {"params": params, "lr": stage.lr * scales[name], "name": name, "scale": float(scales[name])}
        for name, params in members.items()
        if params
    ]


# --------------------------------------------------------------------------------------- checkpoints
def latest_checkpoint(out: str | Path) -> Path | None:
    """The newest complete checkpoint folder ``OUT/checkpoints/step_*`` (one holding ``train_state.pt``)."""
    folders = [
        (int(match.group(1)), path)
        for path in (Path(out) / "checkpoints").glob("step_*")
        if (match := _STEP_FOLDER.fullmatch(path.name)) and (path / STATE_FILE).is_file()
    ]
    return max(folders)[1] if folders else None


def _link(source: Path, tmp: str) -> None:
    """Make ``tmp`` a hard link to ``source`` (a copy where the file system has no hard links)."""
    os.unlink(tmp)
    try:
        os.link(source, tmp)
    except OSError:
        shutil.copyfile(source, tmp)


def _publish(out: Path, folder: Path) -> None:
    """Point ``OUT/model.safetensors`` at the weights of ``folder`` and remove the other step folders."""
    target = out / MODEL_FILE
    # rename() between two links of one file is a no-op that would leave the temporary link behind
    if not (target.exists() and target.samefile(folder / MODEL_FILE)):
        atomic_write(target, lambda tmp: _link(folder / MODEL_FILE, tmp))
    for other in (out / "checkpoints").glob("step_*"):
        if other != folder:
            shutil.rmtree(other, ignore_errors=True)


def _save_checkpoint(out: Path, model: YOFO, state: dict[str, Any], metadata: dict[str, str]) -> Path:
    folder = out / "checkpoints" / f"step_{state['step']:08d}"
    save_model(model, folder / MODEL_FILE, {"step": str(state["step"]), **metadata})
    atomic_write(folder / STATE_FILE, lambda tmp: torch.save(state, tmp))
    _publish(out, folder)
    return folder


def _read_checkpoint(folder: Path, cfg: DictConfig, trained_on: dict[str, str]) -> dict[str, Any]:
    """The training state of a checkpoint folder of the run in ``folder.parent.parent``, after checking that
    the run can continue with ``cfg``: the same model, the same settings of what it learns (the run's
    ``config.yaml``; :func:`yofo.config.run_config_differences`) and the same data (``trained_on``, the
    metadata :func:`yofo.engine.checkpoint.training_metadata` gives for ``cfg.data``); reads only."""
    weights, run_config = folder / MODEL_FILE, folder.parent.parent / "config.yaml"
    saved = checkpoint_model_config(weights)
    diffs = model_config_differences(saved, cfg.model)
    if diffs:
        k = diffs[0]
        saved, wanted = flatten_config(saved), flatten_config(cfg.model)
        raise CheckpointError(
            f"{weights}: trained with a different model config (model.{k} is {saved.get(k)!r} there, "
            f"{wanted.get(k)!r} in the config; {len(diffs)} difference(s)); resume with the same model settings "
            f"or train into another --out"
        )
    if run_config.is_file():
        try:
            started = OmegaConf.load(run_config)
        except Exception as err:  # yaml errors come in several types
            raise CheckpointError(f"{run_config}: not valid YAML ({str(err).splitlines()[0]}); it records the "
                                  f"settings the run was started with, which a resume must keep") from None
        diffs = run_config_differences(started, cfg)
        if diffs:
            k = diffs[0]
            raise CheckpointError(
                f"{run_config}: the run was started with {k}={OmegaConf.select(started, k)!r}, the config has "
                f"{OmegaConf.select(cfg, k)!r} ({len(diffs)} difference(s)); resume with the run's settings "
                f"(that file) or train into another --out"
            )
    recorded = read_metadata(weights).get("trained_on")
    if recorded is not None and json.loads(recorded) != json.loads(trained_on["trained_on"]):
        raise CheckpointError(
            f"{weights}: trained on {training_data(weights).summary}, the config's data is "
            f"{describe_datasets(json.loads(trained_on['trained_on']))}; resume on the run's data or train into "
            f"another --out"
        )
    try:
        state = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"{folder / STATE_FILE}: not a readable training state ({err.__class__.__name__})") from None
    if not isinstance(state, dict) or str(state.get("step")) != read_metadata(weights).get("step"):
        raise CheckpointError(f"{folder}: {STATE_FILE} and {MODEL_FILE} are not from the same step")
    return state


# ------------------------------------------------------------------------------------------- logging
def environment(device: torch.device, world_size: int = 1) -> dict[str, Any]:
    """What, besides the config and the data, decides the bits of a training run on this machine.

    Args:
        device: the training device.
        world_size: training processes (DDP under ``torchrun``; 1 alone).

    Returns:
        ``{"torch", "python", "cpu", "cpu_capability", "num_threads", "device", "world_size"}`` and, on CUDA,
        ``"cuda"`` and ``"gpu"``; ``cpu`` is the processor's model name (``/proc/cpuinfo``, else
        :func:`platform.processor`), ``cpu_capability`` the instruction set torch's CPU kernels use
        (``"AVX512"``, ``"AVX2"``, ...).
    """
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    env = {"torch": torch.__version__, "python": platform.python_version(), "cpu": cpu,
           "cpu_capability": torch.backends.cpu.get_cpu_capability(), "num_threads": torch.get_num_threads(),
           "device": str(device), "world_size": world_size}
    if device.type == "cuda":
        env.update(cuda=torch.version.cuda, gpu=torch.cuda.get_device_name(device))
    return env


def _record_environment(out: Path, start_step: int, device: torch.device, world_size: int) -> None:
    """Add this start of the run to ``OUT/environment.json`` (a list, one entry per start, oldest first)."""
    path = out / ENVIRONMENT_FILE
    starts = []
    if start_step > 0 and path.is_file():
        try:
            starts = [s for s in json.loads(path.read_text()) if s.get("start_step", 0) < start_step]
        except (json.JSONDecodeError, AttributeError, TypeError):
            starts = []  # a damaged record is replaced, never fatal to the run
    starts.append({"start_step": start_step, **environment(device, world_size)})
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(starts, indent=2) + "\n"))


class MetricsLog:
    """``OUT/metrics.csv`` (columns :data:`METRICS`) and TensorBoard scalars when it is installed.

    On resume, rows after the resumed step (written by the interrupted run after its last checkpoint) are
    dropped, so the file reads as one uninterrupted run.
    """

    def __init__(self, out: Path, start_step: int):
        path = out / METRICS_FILE
        rows = []
        if start_step > 0 and path.is_file():
            with path.open(newline="") as f:
                # a row cut short by a kill lacks its last fields
                rows = [row for row in csv.DictReader(f) if all(row.get(k) for k in METRICS)
                        and row["step"].isdigit() and int(row["step"]) <= start_step]

        def write(tmp: str) -> None:
            with open(tmp, "w", newline="") as f:
                writer = csv.DictWriter(f, METRICS, extrasaction="ignore")
                writer.writeheader()
                writer.writerows(rows)

        atomic_write(path, write)
        self.file = path.open("a", newline="")
        self.writer = csv.DictWriter(self.file, METRICS)
        self.tensorboard = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            # opened with the first row, so that a run which logs nothing (it failed at once) adds no event file
            self._open_tensorboard = lambda: SummaryWriter(str(out / "tensorboard"), purge_step=start_step + 1)
        except ImportError:  # tensorboard is optional
            self._open_tensorboard = None

    def write(self, row: dict[str, Any]) -> None:
        self.writer.writerow(row)
        self.file.flush()
        if self.tensorboard is None and self._open_tensorboard is not None:
            self.tensorboard = self._open_tensorboard()
        if self.tensorboard is not None:
            for key in ("loss", "lr", "clips_per_s"):
                self.tensorboard.add_scalar(f"train/{key}", row[key], row["step"])

    def close(self) -> None:
        self.file.close()
        if self.tensorboard is not None:
            self.tensorboard.close()


# ------------------------------------------------------------------------------------------ training
def _check(train_cfg: DictConfig, world_size: int, max_steps: int | None, pair_expressions: bool) -> None:
    if train_cfg.amp not in ("bf16", "fp16", "none"):
        raise ConfigError(f"train.amp: '{train_cfg.amp}' is not one of bf16, fp16, none")
    if train_cfg.batch_size < 1 or train_cfg.batch_size % world_size:
        raise ConfigError(f"train.batch_size: {train_cfg.batch_size} must be a positive multiple of the "
                          f"{world_size} processes (it is the global batch)")
    for key in ("iters_per_epoch", "checkpoint_every", "log_every"):
        if train_cfg[key] < 1:
            raise ConfigError(f"train.{key}: {train_cfg[key]} must be >= 1")
    for key in ("stage1.epochs", "stage2.epochs", "overfit"):
        if OmegaConf.select(train_cfg, key) < 0:
            raise ConfigError(f"train.{key}: {OmegaConf.select(train_cfg, key)} must be >= 0")
    if max_steps is not None and max_steps < 1:
        raise ConfigError(f"--max-steps: {max_steps} must be >= 1")
    if pair_expressions and train_cfg.batch_size % 2:
        raise ConfigError(f"train.batch_size: {train_cfg.batch_size} must be even with data.pair_expressions "
                          "(a batch holds both clips of each pair)")


def train(
    cfg: DictConfig, out: str | Path, resume: bool = False, max_steps: int | None = None, progress: bool = True
) -> YOFO:
    """Train YOFO as configured; under ``torchrun`` every process calls this and DDP is used.

    Args:
        cfg: the full config (:func:`yofo.config.load_config`).
        out: run folder: checkpoints, ``model.safetensors``, ``metrics.csv``, ``config.yaml``, ``environment.json``.
        resume: continue from the newest checkpoint in ``out`` (a new run when there is none).
        max_steps: stop after this many steps in total (counted from the start of the run).
        progress: show a progress bar (rank 0).

    Returns:
        the trained model (eval mode); rank 0 has written its final checkpoint.

    Raises:
        ConfigError: invalid training settings.
        DatasetError: the training data is missing or unreadable.
        CheckpointError: ``out`` holds a checkpoint and ``resume`` is off, or the run cannot continue with
            ``cfg`` (another model config, other data, other training settings; :func:`_read_checkpoint`).
            Nothing is written before these checks.
        TrainingError: the loss became nan or inf; the last good checkpoint is kept.
    """
    dist = init_distributed(cfg.device)
    deterministic = torch.are_deterministic_algorithms_enabled()
    try:
        return _train(cfg, Path(out), resume, max_steps, progress, dist)
    finally:
        torch.use_deterministic_algorithms(deterministic)
        dist.close()


# torch 2.13 renamed DDP's broadcast_buffers (now a FutureWarning) to forward_sync_buffers, which still syncs the
# buffers once at start: harmless, every rank builds the same model from the same seed or checkpoint.
_NO_BUFFER_SYNC = ({"forward_sync_buffers": False}
                   if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
                   else {"broadcast_buffers": False})


def _start_stage(
    model: YOFO, cfg: DictConfig, stage: int, saved: dict[str, Any] | None, scaler: torch.amp.GradScaler,
    dist: Distributed,
) -> tuple[torch.optim.Adam, torch.optim.lr_scheduler.MultiStepLR, torch.nn.Module]:
    """A stage's optimizer, its per-iteration scheduler and the network to call (DDP-wrapped when distributed).

    ``saved``: the training state being resumed. Its optimizer, scheduler and scaler are restored only if it
    was saved in this stage: a checkpoint from the last step of stage 1 resumes into a fresh stage-2
    optimizer, as the uninterrupted run does.
    """
    tc = cfg.train
    stage_cfg = tc.stage1 if stage == 1 else tc.stage2
    optimizer = torch.optim.Adam(parameter_groups(model, stage_cfg, tc.freeze_stem, tc.aux_weight > 0))
    milestones = [m * tc.iters_per_epoch for m in stage_cfg.milestones]
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, stage_cfg.gamma)
    if saved is not None and saved["stage"] == stage:
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        if saved["scaler"]:  # empty unless fp16 on CUDA
            scaler.load_state_dict(saved["scaler"])
    net = model
    if dist.enabled:  # BatchNorm statistics are frozen: no buffers to broadcast at each forward
        device_ids = [dist.device.index] if dist.device.type == "cuda" else None
        net = DistributedDataParallel(model, device_ids=device_ids, **_NO_BUFFER_SYNC)
    if dist.is_main:
        trained = sum(p.numel() for g in optimizer.param_groups for p in g["params"])
        tqdm.write(f"stage {stage}: {trained:,} trained parameters; lr "
                   + ", ".join(f"{g['name']} {g['lr']:.1e}" for g in optimizer.param_groups))
        if stage_cfg.train_encoders and not cfg.model.text_encoder.store_weights:
            tqdm.write("the text transformer stays frozen: model.text_encoder.store_weights=false, so checkpoints "
                       "could not hold its trained weights")
    return optimizer, scheduler, net


def _train(cfg: DictConfig, out: Path, resume: bool, max_steps: int | None, progress: bool, dist: Distributed) -> YOFO:
    tc, device = cfg.train, dist.device
    _check(tc, dist.world_size, max_steps, cfg.data.pair_expressions)
    steps = stage_steps(tc)
    end = sum(steps) if max_steps is None else min(max_steps, sum(steps))
    say = tqdm.write if dist.is_main else lambda message: None
    window, data = cfg.model.fm.motion.window, cfg.data
    # a 2-frame window learns from a pair at any gap (the demo recipe), a longer one from consecutive frames
    if not data.motion_history and (data.num_frames < window or (window > 2 and data.max_gap != data.num_frames - 1)):
        say(f"note: model.fm.motion.window={window} learns from clips of at least {window} consecutive frames; "
            f"these clips have {data.num_frames} frames within a gap of {data.max_gap} (for consecutive ones: "
            f"data.num_frames={max(window, data.num_frames)} data.max_gap={max(window, data.num_frames) - 1})")

    # Every check comes before the first write.
    folder = latest_checkpoint(out)
    if folder is not None and not resume:
        raise CheckpointError(f"{out}: already holds a checkpoint ({folder.name}); pass --resume to continue "
                              f"that run, or train into another --out")
    trained_on = training_metadata(cfg.data)  # what the checkpoints will say the model knows
    saved = _read_checkpoint(folder, cfg, trained_on) if folder is not None else None
    workers = loader_workers(cfg.data.num_workers, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    dataset = ClipDataset(cfg, seed=tc.seed)
    if resume and saved is None:
        say(f"no checkpoint in {out}: starting a new run")

    if device.type == "cpu":  # bit-exact resume (CUDA would also need CUBLAS_WORKSPACE_CONFIG)
        torch.use_deterministic_algorithms(True)
    if tc.num_threads > 0:
        torch.set_num_threads(tc.num_threads)
    torch.manual_seed(tc.seed)
    model = build_model(cfg.model, load_pretrained=saved is None)
    start = 0
    if saved is not None:
        load_state(model, folder / MODEL_FILE)
        torch.set_rng_state(saved["rng"]["torch"])
        if device.type == "cuda" and saved["rng"]["cuda"] is not None:
            torch.cuda.set_rng_state(saved["rng"]["cuda"], device)
        start = saved["step"]
    model.to(device).train()
    if device.type == "cuda" and tc.channels_last:
        model.to(memory_format=torch.channels_last)
    if start >= end:
        say(f"{out}: already trained for {start} steps (asked for {end}); nothing to do")
        if dist.is_main:
            _publish(out, folder)
        return model.eval()

    amp = device.type == "cuda" and tc.amp != "none"  # CPU trains in fp32
    deep_supervision = tc.aux_weight > 0
    amp_dtype = torch.float16 if tc.amp == "fp16" else torch.bfloat16
    scaler = torch.amp.GradScaler("cuda", enabled=amp and tc.amp == "fp16")
    elapsed = saved["elapsed"] if saved is not None else 0.0
    if dist.is_main:
        atomic_write(out / "config.yaml", lambda tmp: OmegaConf.save(cfg, tmp))
        _record_environment(out, start, device, dist.world_size)
        log = MetricsLog(out, start)
    # One iterator spans the whole run (both stages), so the workers start once: persistent_workers would
    # change nothing. Pinned host memory lets the copies to the GPU overlap the step.
    loader = DataLoader(
        dataset,
        batch_sampler=StepSampler(start, end, tc.batch_size, dist.rank, dist.world_size, tc.overfit),
        num_workers=workers,
        pin_memory=device.type == "cuda",
    )
    say(f"training {start} -> {end} steps (stage 1: {steps[0]}, stage 2: {steps[1]}) on {dist.world_size} "
        f"process(es), {device}, batch {tc.batch_size}, {workers} loader worker(s); writing to {out}")
    bar = tqdm(total=end, initial=start, unit="step", dynamic_ncols=True, disable=not (progress and dist.is_main))
    window_loss, window_steps, window_start = 0.0, 0, time.perf_counter()
    clock = time.perf_counter()

    def clip_input(clips: torch.Tensor) -> torch.Tensor:
        """A batch's ``(B, T, ..., 3, H, W)`` frames on the device, normalised, once per pair of expressions."""
        clips = clips[0::2] if cfg.data.pair_expressions else clips
        return model.normalize(clips.to(device, non_blocking=True).contiguous())

    try:
        for step, batch in zip(range(start, end), loader):
            if step in (start, steps[0]):  # the first step of this run or of stage 2
                stage = 1 if step < steps[0] else 2
                optimizer, scheduler, net = _start_stage(model, cfg, stage, saved, scaler, dist)
                saved = None

            # One memory layout whatever the loader returns (collating in workers makes it contiguous, in the
            # main process it keeps the clips' strides): convolution results depend on it in the last bits.
            # With paired expressions the two clips of a pair are the same frames (ClipDataset): the image
            # encoder runs once per pair and the model repeats its outputs for the two sentences.
            frames = clip_input(batch["frames"])
            previous = clip_input(batch["previous"]) if "previous" in batch else None  # data.motion_history
            masks = batch["masks"].to(device, non_blocking=True)
            valid = batch["valid"].to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp):
                outputs = net(frames, list(batch["text"]), label_logits=deep_supervision, previous=previous)
            logits = outputs[0] if deep_supervision else outputs
            loss = segmentation_loss(logits.float(), masks, valid, tc.loss_weight, tc.bce_weight)
            if deep_supervision:
                loss = loss + tc.loss_weight * tc.aux_weight * label_loss(outputs[1].float(), masks, valid)
            value = dist.mean(loss.detach()).item()  # the same on every rank, so all stop together
            if not math.isfinite(value):
                last = latest_checkpoint(out)
                raise TrainingError(
                    f"loss is {value} at step {step + 1} (clips {', '.join(batch['source'])}); "
                    + (f"the last good checkpoint is {last}" if last else "no checkpoint was written yet")
                )
            group = optimizer.param_groups[0]
            lr = group["lr"] / group["scale"]  # the stage's lr at this step, before the scheduler moves it
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()

            done = step + 1
            window_loss, window_steps = window_loss + value, window_steps + 1
            bar.update()
            if done % tc.log_every == 0 or done == end:
                now = time.perf_counter()
                row = {
                    "step": done,
                    "epoch": (done - 1) // tc.iters_per_epoch + 1,
                    "stage": stage,
                    "loss": round(window_loss / window_steps, 6),
                    "lr": lr,
                    "clips_per_s": round(window_steps * tc.batch_size / (now - window_start), 4),
                    "elapsed": round(elapsed + now - clock, 2),
                }
                bar.set_postfix(loss=f"{row['loss']:.3f}", lr=f"{row['lr']:.1e}", clips_s=f"{row['clips_per_s']:.2f}")
                if dist.is_main:
                    log.write(row)
                window_loss, window_steps, window_start = 0.0, 0, now
            if done % tc.checkpoint_every == 0 or done == end:
                if dist.is_main:
                    _save_checkpoint(out, model, {
                        "step": done,
                        "stage": stage,
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "scaler": scaler.state_dict(),
                        "rng": {"torch": torch.get_rng_state(),
                                "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None},
                        "elapsed": elapsed + time.perf_counter() - clock,
                    }, trained_on)
                dist.barrier()  # no rank runs ahead of (or exits before) the checkpoint
    finally:
        bar.close()
        if dist.is_main:
            log.close()
    say(f"done: {end} steps; weights in {out / MODEL_FILE}")
    return model.eval()
