"""yofo: referring video object segmentation with YOFO (You Only Infer Once, AAAI 2022).

    import yofo
    model = yofo.load("checkpoints/yofo-synthetic.safetensors")
    masks = yofo.VideoSegmenter(model).segment("video.mp4", ["the red circle"])
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["load", "VideoSegmenter", "__version__"]


def __getattr__(name: str) -> Any:  # lazy: `yofo --version` and data tools need no model code
    if name == "load":
        from yofo.engine.checkpoint import load_model

        return load_model
    if name == "VideoSegmenter":
        from yofo.predictor import VideoSegmenter

        return VideoSegmenter
    raise AttributeError(f"module 'yofo' has no attribute {name!r}")
