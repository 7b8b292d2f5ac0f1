"""Fixtures shared by the whole test suite."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Callable, Iterator, Sequence

import pytest
import torch

from yofo.config import load_config
from yofo.model.fusion import init_conv_weights
from yofo.model.yofo import YOFO, build_model

REAL_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


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


@pytest.fixture(scope="session")
def benchmark_script() -> Iterator[Callable[[str], ModuleType]]:
    """Factory ``benchmark_script(name)``: ``benchmarks/<name>.py`` as the module ``name``.

    The module is registered in ``sys.modules`` (until the session ends), so that its functions pickle by
    name, e.g. for the worker processes of ``ablations.py --jobs``.
    """
    loaded: list[str] = []

    def load(name: str) -> ModuleType:
        if name not in sys.modules:
            spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
            loaded.append(name)
        return sys.modules[name]

    yield load
    for name in loaded:
        del sys.modules[name]
