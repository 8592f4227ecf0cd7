"""Model files shipped with the package: the starter model for offline fine-tuning.

`starter.safetensors` is a light U-Net trained on synthetic touching cells by
``benchmarks/make_starter_model.py`` (the script's docstring records how and how well).
"""

from __future__ import annotations

from pathlib import Path

STARTER_FILE = "starter.safetensors"


def starter_model_path() -> Path:
    """Path of the shipped starter model file (a napari-unet checkpoint)."""
    return Path(__file__).with_name(STARTER_FILE)
