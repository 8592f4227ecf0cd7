"""Model files shipped with the package: starter models for offline fine-tuning.

`starter.safetensors` is a light 3-class U-Net (background / nucleus / border) trained
on DSB2018 nuclei images (CC0) by ``benchmarks/make_starter_model.py``;
`phase_starter.safetensors` the same kind of model trained on phase-contrast images of
adherent cells (usiigaci, MIT) by ``benchmarks/make_phase_starter.py``;
`stained_starter.safetensors` the nuclei starter taught colour (3 channels) on the
stained brightfield DSB2018 images by ``benchmarks/make_stained_starter.py``. Their metadata
("starter") lists the training images and the scores on held-out images.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

STARTER_FILE = "starter.safetensors"
PHASE_STARTER_FILE = "phase_starter.safetensors"
STAINED_STARTER_FILE = "stained_starter.safetensors"
# keys of the shipped models (`napari-unet train --from KEY`, the docks' choices)
STARTER_KEY, PHASE_KEY, STAINED_KEY = "starter", "phase", "stained"


def starter_model_path() -> Path:
    """Path of the shipped nuclei starter model file (a napari-unet checkpoint)."""
    return Path(__file__).with_name(STARTER_FILE)


def phase_starter_model_path() -> Path:
    """Path of the shipped phase-contrast starter model file (a napari-unet checkpoint)."""
    return Path(__file__).with_name(PHASE_STARTER_FILE)


def stained_starter_model_path() -> Path:
    """Path of the shipped stained-brightfield (RGB) starter model file."""
    return Path(__file__).with_name(STAINED_STARTER_FILE)


@dataclass(frozen=True)
class Shipped:
    """A shipped model: ``key`` for `napari-unet train --from`, ``title`` in the docks."""

    key: str
    title: str
    file: str

    @property
    def path(self) -> Path:
        return Path(__file__).with_name(self.file)


SHIPPED = (
    Shipped(STARTER_KEY, "Starter model", STARTER_FILE),
    Shipped(PHASE_KEY, "Phase-contrast starter", PHASE_STARTER_FILE),
    Shipped(STAINED_KEY, "Stained RGB starter", STAINED_STARTER_FILE),
)


def shipped_models() -> list[Shipped]:
    """The shipped models installed here (a trimmed install may lack a file)."""
    return [model for model in SHIPPED if model.path.is_file()]


def shipped_paths() -> list[str]:
    """The installed shipped models' files: what *best starter (auto)* chooses from."""
    return [str(model.path) for model in shipped_models()]


def shipped_by_title(title: str) -> Shipped | None:
    """The shipped model a dock lists under ``title`` (any case), if any."""
    return next((m for m in SHIPPED if m.title.lower() == title.lower()), None)


def shipped_by_key(key: str) -> Shipped | None:
    """The shipped model named ``key`` (`napari-unet train --from`, the Train dock)."""
    return next((m for m in SHIPPED if m.key == key), None)


def colour_counterpart(path: str | Path) -> Shipped | None:
    """For a folder mixing gray and colour images: the shipped starter for the other kind
    (the stained RGB starter for the nuclei starter, and back); None for any other model
    (a gray model cannot take colour, nor the reverse)."""
    other = {STARTER_KEY: STAINED_KEY, STAINED_KEY: STARTER_KEY}
    path = Path(path).resolve()
    model = next((m for m in SHIPPED if m.key in other and m.path.resolve() == path), None)
    counterpart = None if model is None else shipped_by_key(other[model.key])
    return counterpart if counterpart is not None and counterpart.path.is_file() else None
