"""Fixtures shared by the whole test suite."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import pytest
import torch

from yofo.config import load_config
from yofo.model.fusion import init_conv_weights
from yofo.model.yofo import YOFO, build_model

REAL_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The real test material beside the checkout (``../shared/data/real``); the test is skipped without it."""
    if not REAL_DATA.is_dir():
        pytest.skip(f"real test data not found at {REAL_DATA}")
    return REAL_DATA


@pytest.fixture(scope="session")
def random_model() -> Callable[..., YOFO]:
    """Factory ``random_model(config="tiny", overrides=(), seed=0)`` of untrained models that give varied logits.

    The decoder's output conv starts at zero (yofo.model.decoder), so a freshly built model outputs logit 0
    everywhere and passes no gradient upstream; here that layer gets random weights, as after a training step.
    """

    def build(config: str = "tiny", overrides: Sequence[str] = (), seed: int = 0) -> YOFO:
        torch.manual_seed(seed)
        model = build_model(load_config(config, list(overrides)).model)
        init_conv_weights(model.decoder.out_conv)
        return model

    return build
