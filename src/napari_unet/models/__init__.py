"""Model files shipped with the package: the starter model for offline fine-tuning.

`starter.safetensors` is a light 3-class U-Net (background / nucleus / border) trained
on DSB2018 nuclei images (CC0) by ``benchmarks/make_starter_model.py``; its metadata
("starter") lists the training images and the scores on held-out images.
"""

from __future__ import annotations

from pathlib import Path

STARTER_FILE = "starter.safetensors"


def starter_model_path() -> Path:
    """Path of the shipped starter model file (a napari-unet checkpoint)."""
    return Path(__file__).with_name(STARTER_FILE)
