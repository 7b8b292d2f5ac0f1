"""Fixtures of the training tests: a tiny synthetic dataset and a micro model config."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from yofo.data.synthetic import synthesize

# The tiny config, narrower still, at 64×64 with 2-frame clips: a training step takes well under a second.
MICRO = [
    "model.image_encoder.width=8",
    "model.fm.dim=16",
    "model.fm.key_dim=8",
    "model.meta_transfer.feature_dim=16",
    "model.decoder.width=8",
    "model.target_dim=4",
    "model.input_size=[64,64]",
    "data.num_frames=2",
    "data.max_gap=4",
    "train.batch_size=2",
    "train.log_every=1",
    "device=cpu",
]


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """64×64 synthetic videos of 6 frames in the Ref-YouTube-VOS layout: 4 train, 3 valid (2-4 objects each,
    two expressions per object)."""
    root = tmp_path_factory.mktemp("synth") / "data"
    synthesize(root, train=4, valid=3, seed=0, size=(64, 64), frames=6)
    return root


@pytest.fixture(scope="session")
def micro(synth_root: Path) -> list[str]:
    """Overrides of the ``tiny`` config: the micro model trained on ``synth_root``."""
    return [*MICRO, f"data.root={synth_root}"]


@pytest.fixture
def single_thread(monkeypatch: pytest.MonkeyPatch):
    """Micro models run fastest on one thread without oneDNN, whose per-shape set-up dominates at 64×64;
    one thread also keeps a busy machine from stalling OpenMP barriers."""
    monkeypatch.setattr(torch.backends.mkldnn, "enabled", False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _run_yofo(*args: str, cwd: Path, background: bool = False):
    """``python -m yofo ARGS`` on one thread: the finished process, or the running one with ``background``."""
    command = [sys.executable, "-m", "yofo", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if background:
        return subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture
def run_yofo():
    """:func:`_run_yofo`: the ``yofo`` command line in a subprocess."""
    return _run_yofo
