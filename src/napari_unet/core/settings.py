"""The training settings that the docks preview and training uses: one object, one truth.

The Weight map dock previews `WeightSettings`, the Augmentation dock previews
`AugmentConfig`; the Train dock trains with exactly those (a `TrainingSettings`), saves
them in the model's metadata and restores them from a model it fine-tunes. Pure data.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from napari_unet.core.augment import AugmentConfig
from napari_unet.core.io import InputError
from napari_unet.core.weights import MAX_CLASS_WEIGHT, SIGMA_PX, W0

# How unpainted pixels of an annotated slice count (see `core.data`):
# "auto": ignored when the painted cells are sparse (few, no training boxes), else background;
# "ignore": always ignored (only painted cells, a band around them and background strokes);
# "background": always background (a completely annotated slice or box).
UNPAINTED = ("auto", "ignore", "background")


@dataclass(frozen=True)
class WeightSettings:
    """Loss weight map parameters (paper eq. 2) plus the cap on the class weights."""

    w0: float = W0
    sigma_px: float = SIGMA_PX
    balance: bool = True
    max_class_weight: float = MAX_CLASS_WEIGHT

    def check(self) -> None:
        if not (math.isfinite(self.w0) and self.w0 >= 0):
            raise InputError(f"w0 must be a finite number >= 0; got {self.w0}")
        if not (math.isfinite(self.sigma_px) and self.sigma_px > 0):
            raise InputError(f"sigma must be a positive number of pixels; got {self.sigma_px}")
        if not self.max_class_weight >= 1:
            raise InputError(f"max_class_weight must be at least 1; got {self.max_class_weight}")

    def describe(self) -> str:
        balance = f"balanced (capped at {self.max_class_weight:g}x)" if self.balance else "w_c = 1"
        return f"w0 {self.w0:g}, sigma {self.sigma_px:g} px, classes {balance}"


@dataclass(frozen=True)
class TrainingSettings:
    """Everything the preview docks show that changes what the network learns."""

    weights: WeightSettings = field(default_factory=WeightSettings)
    augment: AugmentConfig | None = field(default_factory=AugmentConfig)  # None: off
    unpainted: str = "auto"

    def check(self) -> None:
        self.weights.check()
        if self.augment is not None:
            self.augment.check()
        if self.unpainted not in UNPAINTED:
            raise InputError(f"unpainted must be one of {UNPAINTED}; got {self.unpainted!r}")

    def with_changes(self, **changes: Any) -> TrainingSettings:
        return replace(self, **changes)

    def to_metadata(self) -> dict[str, Any]:
        """Plain JSON for the model file (``training.settings``)."""
        return {
            "weights": asdict(self.weights),
            "augment": asdict(self.augment) if self.augment is not None else None,
            "unpainted": self.unpainted,
        }

    @classmethod
    def from_metadata(cls, meta: dict[str, Any] | None) -> TrainingSettings:
        """The settings a model was trained with; unknown or missing keys take defaults.

        Older model files have only ``training.augment``: it is used when present.
        """
        meta = meta or {}
        training = meta.get("training", meta)
        stored = training.get("settings") or {}
        weights = _known(WeightSettings, stored.get("weights"))
        augment_meta = stored.get("augment", training.get("augment", {}))
        augment = None if augment_meta is None else _augment(augment_meta)
        unpainted = stored.get("unpainted", "auto")
        return cls(
            weights=weights,
            augment=augment,
            unpainted=unpainted if unpainted in UNPAINTED else "auto",
        )

    def describe(self) -> str:
        """One line for the Train dock: what the loss and the augmentation will be."""
        if self.augment is None:
            aug = "augmentation off"
        else:
            a = self.augment
            parts = [
                f"elastic {a.grid}x{a.grid} / {a.sigma_px:g} px" if a.elastic else "no elastic"
            ]
            parts += ["flips"] if a.flips else []
            parts += ["90° turns"] if a.rot90 else []
            parts += [f"±{a.rotate_deg:g}°"] if a.rotate_deg else []
            aug = "augment: " + ", ".join(parts)
        return f"loss: {self.weights.describe()}; {aug}; unpainted pixels: {self.unpainted}"


def _known(cls, values: dict[str, Any] | None):
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in (values or {}).items() if k in names})


def _augment(values: dict[str, Any]) -> AugmentConfig:
    names = {f.name for f in fields(AugmentConfig)}
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items() if k in names}
    return AugmentConfig(**kwargs)
