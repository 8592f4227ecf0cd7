"""Training tiles from sparse annotations: targets, loss weights, hold-out and sampling.

A slice is annotated when it holds any label or background stroke (or a training box
was drawn on it). Within an annotated slice the training region is the union of the
boxes, or the whole slice without boxes; there, unlabelled pixels are background.
*Sparse* slices are the exception (see `informative_region`): a few painted cells and
no box, where unpainted pixels are mostly cells nobody painted yet. There only the
painted cells, a band of background around them and explicit background strokes are
used. Everything else gets loss weight 0 (ignored), never "background". Targets and
weight maps are computed once here, not per step. Pure numpy; the loop is `train.py`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

import numpy as np

from napari_unet.core import size
from napari_unet.core import weights as weight_maps
from napari_unet.core.annotations import Box, count_strokes
from napari_unet.core.io import InputError, as_image, as_labels, check_same_shape
from napari_unet.core.normalize import PERCENTILES, normalize_stack
from napari_unet.core.settings import UNPAINTED, WeightSettings

VALIDATION_FRACTION = 0.2  # share of a single annotated slice held out (bottom band)
MIN_VALIDATION_ROWS = 8  # a thinner band says nothing; train on everything instead
MIN_SIZE_PX = 8  # smaller images are refused (mirror padding covers any other size)
MAX_CANDIDATES = 1 << 20  # tile centres drawn from at most this many annotated pixels
# "unpainted" = "auto": a slice without boxes is sparse when more unpainted pixels (away
# from the painted cells) look like cells than UNPAINTED_CELLS_RATIO x the painted area;
# where intensity cannot tell (phase contrast), when the painted cells cover less than
# SPARSE_MAX_COVERAGE of it. Fully annotated DSB 2018 nuclei cover 0.3-33 % (median
# 10 %), synthetic cells ~60 %, phase contrast cells ~25 %; ten painted nuclei of a
# 520x696 image 0.5 %, fifty 2.5 %.
SPARSE_MAX_COVERAGE = 0.15
UNPAINTED_CELLS_RATIO = 0.5
# Background band around painted cells on sparse slices: this share of the median cell
# diameter, within [MIN_BAND_PX, MAX_BAND_PX] (thin enough to miss most neighbours).
BAND_FRACTION = 0.5
MIN_BAND_PX, MAX_BAND_PX = 3, 20
# In the band, pixels as bright (or dark) as the painted cells are probably cells nobody
# painted: ignored when cells and band differ by this many pooled standard deviations.
LOOKALIKE_SEPARATION = 1.0
# On sparse slices where intensity separates cells from background, clear background far
# from anything cell-like is used too (see `_clear_background`).
AUTO_BACKGROUND = True
RING_PX = 1.5  # the 8 neighbours of a painted cell's outline: its separation gap
MIN_CELLS_FOR_HOLD_OUT = 4  # sparse slices: hold out painted cells only from this many
# Sparse painting on a model that already finds cells: where that model is sure
# (`TEACHER_CONFIDENCE`) and nothing was painted, its own classes are targets with this
# loss weight, so fine-tuning learns the painted cells without forgetting the rest.
TEACHER_WEIGHT = 0.5
TEACHER_UNSURE = 255  # `teacher` value of a pixel the model is not sure about

BoxLike = Box | Sequence[int | None]


@dataclass(frozen=True)
class ValidationRegion:
    """Held-out pixels: rows y0:y1, columns x0:x1 of data slice ``index`` (``mask`` inside)."""

    index: int  # into TrainingData arrays
    slice_index: int  # in the user's image (0 for 2D)
    y0: int
    x0: int
    y1: int
    x1: int
    mask: np.ndarray  # bool (y1 - y0, x1 - x0): held-out annotated pixels


@dataclass(frozen=True)
class AnnotationUse:
    """What training will use, for the Train dock: cells, strokes, area and warnings."""

    n_cells: int
    n_background_strokes: int
    used_fraction: float  # share of the annotated slices' pixels with a loss weight
    sparse_slices: tuple[int, ...]  # slices where unpainted pixels are ignored
    n_slices: int  # annotated slices
    warnings: tuple[str, ...] = ()
    teacher_fraction: float = 0.0  # share of pixels taught by the start model (`teacher`)
    n_images: int = 1  # image/labels pairs (`TrainingData.from_pairs`)

    def describe(self) -> str:
        strokes = (
            f", {self.n_background_strokes} background stroke"
            f"{'s' if self.n_background_strokes != 1 else ''}"
        )
        slices = f" of {self.n_slices} slices" if self.n_slices > 1 else ""
        if self.n_images > 1:
            slices = f" of {self.n_images} images" + (
                f" ({self.n_slices} slices)" if self.n_slices > self.n_images else ""
            )
        how = (
            "sparse: unpainted cells ignored"
            if self.sparse_slices and len(self.sparse_slices) == self.n_slices
            else "unpainted = background"
            if not self.sparse_slices
            else f"sparse on {len(self.sparse_slices)} slices"
        )
        taught = (
            f"; the start model's sure pixels elsewhere: {100 * self.teacher_fraction:.0f} %"
            if self.teacher_fraction
            else ""
        )
        return (
            f"{self.n_cells} cells{strokes}; area used: {100 * self.used_fraction:.0f} %"
            f"{slices} ({how}){taught}"
        )


@dataclass
class TrainingData:
    """Annotated slices ready for sampling; ``weights`` is 0 on ignored and held-out pixels."""

    images: np.ndarray  # float32 (N, C, Y, X), percentile-normalised
    targets: np.ndarray  # uint8 (N, Y, X): 0 background, 1 cell interior, [2 border]
    weights: np.ndarray  # float32 (N, Y, X) training loss weights
    labels: np.ndarray  # instance labels (N, Y, X) of the annotated slices
    slice_indices: tuple[int, ...]  # original slice of each row of the arrays
    n_classes: int = 2
    validation: ValidationRegion | None = None
    validation_weights: np.ndarray | None = None  # float32 (y1-y0, x1-x0) on the region
    normalisation: dict = field(default_factory=dict)
    input: dict = field(default_factory=dict)  # axes and channels picked (stored in the model)
    weight_settings: WeightSettings = field(default_factory=WeightSettings)
    use: AnnotationUse | None = None
    unpainted: str = "auto"  # how unpainted pixels were treated (see `informative_region`)
    centres: np.ndarray | None = None  # bool (N, Y, X): tiles are centred here (None: anywhere)
    taught: np.ndarray | None = None  # bool (N, Y, X): targets from the start model (`_teach`)

    @property
    def in_channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def n_training_pixels(self) -> int:
        return int(np.count_nonzero(self.weights))

    @classmethod
    def from_arrays(
        cls,
        image: np.ndarray,
        labels: np.ndarray,
        regions: Sequence[BoxLike] | None = None,
        n_classes: int = 2,
        channels: int = 1,
        validation_fraction: float = VALIDATION_FRACTION,
        percentiles: tuple[float, float] = PERCENTILES,
        background: np.ndarray | None = None,
        unpainted: str = "auto",
        weight_settings: WeightSettings | None = None,
        scale: float | None = 1.0,
        cell_hint: np.ndarray | None = None,
        frames: int = 1,
        teacher: np.ndarray | None = None,
    ) -> TrainingData:
        """Build from an image (Y, X) / stack (Z, Y, X) and instance labels of the same shape.

        ``regions``: training boxes ``(slice_index or None, y0, x0, y1, x1)`` or
        `annotations.Box`; ``None`` for every slice. ``validation_fraction=0`` holds
        nothing out. ``background``: strokes meaning "definitely background" (non-zero,
        same shape as the labels). ``unpainted``: "auto", "ignore" or "background" (see
        `informative_region`). ``weight_settings``: the loss weight map's parameters.
        ``scale``: resize factor applied to image, labels and boxes before
        anything else (``None``: chosen from the cell size, see `size.scale_for`); it is
        recorded in ``normalisation`` and prediction applies it too. ``cell_hint``: where
        a model already sees cells (bool, the labels' shape): on sparse slices where
        intensity cannot tell cells from background, these pixels are left out of the
        background band around the painted cells (see `informative_region`). ``frames``:
        the stack is that many time points, each normalised on its own (a time-lapse);
        1: normalised as a whole (a Z stack). ``teacher``: a start model's sure classes
        (uint8, the labels' shape, `TEACHER_UNSURE` elsewhere): on sparse slices, unused
        pixels it is sure about train toward them (`_teach`).
        """
        if n_classes not in (2, 3):
            raise InputError(
                f"n_classes must be 2 (background, cell) or 3 (+ border); got {n_classes}"
            )
        stack = as_image(image, "image", channels=channels)  # (N, C, Y, X)
        labels = as_labels(labels, "labels")
        label_stack = labels if labels.ndim == 3 else labels[None]
        check_same_shape(
            stack.shape[:1] + stack.shape[2:] if labels.ndim == 3 else stack.shape[2:],
            labels.shape,
        )
        if cell_hint is not None:  # (N, Y, X), as the label stack
            cell_hint = np.asarray(cell_hint, dtype=bool).reshape(-1, *np.shape(cell_hint)[-2:])
        diameter = size.typical_diameter(label_stack)
        scale = size.scale_for(diameter) if scale is None else float(scale)
        if scale != 1.0:
            shape = size.scaled_shape(label_stack.shape, scale)
            stack = size.resize(stack, (*stack.shape[:2], *shape[-2:]))
            label_stack = size.resize(label_stack, shape, labels=True)
            if background is not None:
                strokes = _background_strokes(
                    background, labels if labels.ndim == 3 else labels[None]
                )
                background = size.resize(strokes.astype(np.uint8), shape, labels=True)
            regions = [_scaled_box(_as_box(b, label_stack.shape[0]), scale) for b in regions or []]
            if cell_hint is not None:
                cell_hint = size.resize(cell_hint.astype(np.uint8), shape, labels=True) > 0
        if min(label_stack.shape[-2:]) < MIN_SIZE_PX:
            raise InputError(
                f"image: {label_stack.shape[-2:]} pixels is too small to train on "
                f"(at least {MIN_SIZE_PX} x {MIN_SIZE_PX})"
            )
        strokes = _background_strokes(background, label_stack)
        boxes = [_as_box(b, label_stack.shape[0]) for b in regions or []]
        used, indices = _training_region(label_stack, boxes, strokes)
        if not indices:
            raise InputError(
                "labels: nothing is annotated (all zero"
                + (" inside the training boxes)" if boxes else ")")
                + "; paint a few cells first"
            )
        images, value_ranges = normalize_stack(stack, list(indices), percentiles, frames)
        annotated = np.ascontiguousarray(label_stack[list(indices)])
        used = used[list(indices)]
        strokes = strokes[list(indices)]
        boxed = _boxed_slices(boxes, indices)
        hint = None if cell_hint is None else cell_hint[list(indices)]
        used, centres, touching, use = informative_region(
            annotated, used, strokes, boxed, unpainted, images=images.mean(axis=1), cell_hint=hint
        )
        ws = weight_settings or WeightSettings()
        ws.check()
        loss_weights = weight_maps.weight_map(
            annotated,
            w0=ws.w0,
            sigma=ws.sigma_px,
            balance=ws.balance,
            ignore=~used,
            max_class_weight=ws.max_class_weight,
        )
        # a painted cell's gap to an unpainted neighbour (d1 + d2 ~ 2 px): the border term
        gap = ws.w0 * np.exp(-(2.0**2) / (2.0 * ws.sigma_px**2))
        loss_weights[touching] = np.maximum(loss_weights[touching], gap)
        targets = _targets(annotated, n_classes)
        if use.sparse_slices:
            validation, validation_weights = _hold_out_cells(
                annotated, used, loss_weights, indices, validation_fraction, use
            )
        else:
            validation, validation_weights = _hold_out(
                annotated, used, loss_weights, indices, validation_fraction
            )
        if validation is not None:
            region = (slice(validation.y0, validation.y1), slice(validation.x0, validation.x1))
            loss_weights[validation.index][region][validation.mask] = 0.0
        taught = None
        if teacher is not None and use.sparse_slices:
            rows = _teacher_rows(teacher, annotated.shape[-2:], indices)
            taught = _teach(targets, loss_weights, rows, use, validation)
            use = replace(use, teacher_fraction=float(np.count_nonzero(taught)) / taught.size)
        return cls(
            images=images.astype(np.float32, copy=False),
            targets=targets,
            weights=loss_weights,
            labels=annotated,
            slice_indices=indices,
            n_classes=n_classes,
            validation=validation,
            validation_weights=validation_weights,
            normalisation={
                "percentiles": [float(p) for p in percentiles],
                "value_range": [list(r) for r in value_ranges],
                "scale": scale,
                "diameter_px": None if diameter is None else round(diameter, 2),
            },
            weight_settings=ws,
            use=use,
            unpainted=unpainted,
            centres=centres if use.sparse_slices else None,
            taught=taught,
        )

    @classmethod
    def from_pairs(
        cls,
        pairs: Sequence[tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, Any]],
        n_classes: int = 2,
        channels: int = 1,
        validation_fraction: float = VALIDATION_FRACTION,
        percentiles: tuple[float, float] = PERCENTILES,
        scale: float | None = None,
        background: np.ndarray | None = None,
        unpainted: str = "auto",
        weight_settings: WeightSettings | None = None,
        cell_hints: Sequence[np.ndarray | None] | None = None,
        frames: Sequence[int] | None = None,
        teachers: Sequence[np.ndarray | None] | None = None,
    ) -> TrainingData:
        """Several image/labels pairs (2D or stacks, any sizes), each normalised on its own
        (``frames``: each pair's time points, each normalised on its own; None: 1 each).

        Slices are stacked after padding to the largest height and width (image and
        target mirrored, loss weight 0 outside the original), so the sampler draws
        tiles only from real pixels. ``slice_indices`` counts slices over all pairs.
        The hold-out follows `from_arrays`' rule on the combined slices (painted cells
        when any slice is sparse). ``scale`` (``None``: from the typical cell diameter
        over all pairs) applies to every pair. A pair may carry a third item: its
        training boxes (``regions`` of `from_arrays`). ``background`` strokes belong to
        the first pair; ``cell_hints`` and ``teachers`` hold one entry (or None) per
        pair; ``unpainted`` and ``weight_settings`` apply to every pair (see
        `from_arrays`).
        """
        known = [d for p in pairs if (d := size.typical_diameter(np.asarray(p[1])))]
        diameter = float(np.median(known)) if known else None  # median of the images'
        scale = size.scale_for(diameter) if scale is None else float(scale)

        frames = [1] * len(pairs) if frames is None else [int(f) for f in frames]
        hints = [None] * len(pairs) if cell_hints is None else list(cell_hints)
        teachers = [None] * len(pairs) if teachers is None else list(teachers)
        if not len(frames) == len(hints) == len(teachers) == len(pairs):
            raise ValueError(
                f"{len(frames)} frame counts, {len(hints)} cell hints and {len(teachers)} "
                f"teachers for {len(pairs)} pairs"
            )

        def build(number: int, fraction: float, strokes: np.ndarray | None) -> TrainingData:
            """One pair alone (with ``fraction`` 0: no hold-out, nor teaching, both of
            which are done on all the pairs together)."""
            image, labels, *regions = pairs[number]
            return cls.from_arrays(
                image,
                labels,
                regions=regions[0] if regions else None,
                n_classes=n_classes,
                channels=channels,
                validation_fraction=fraction,
                percentiles=percentiles,
                scale=scale,
                background=strokes,
                unpainted=unpainted,
                weight_settings=weight_settings,
                cell_hint=hints[number],
                frames=frames[number],
                teacher=teachers[number] if len(pairs) == 1 else None,
            )

        if len(pairs) == 1:
            return build(0, validation_fraction, background)
        if not pairs:
            raise InputError("no image/labels pairs to train on")
        parts, numbers, offset, indices = [], [], 0, []
        for number, pair in enumerate(pairs):
            first_slice = offset  # this pair's slices are numbered from here
            offset += 1 if np.ndim(pair[1]) == 2 else int(np.shape(pair[1])[0])
            try:
                part = build(number, 0, background if number == 0 else None)
            except InputError as error:
                if "nothing is annotated" in str(error):
                    continue  # an empty pair adds nothing; all empty is caught below
                raise InputError(f"pair {number + 1}: {error}") from None
            parts.append(part)
            numbers.append(number)
            indices += [first_slice + i for i in part.slice_indices]
        if not parts:
            raise InputError("labels: nothing is annotated in any pair; paint a few cells first")
        height = max(p.labels.shape[1] for p in parts)
        width = max(p.labels.shape[2] for p in parts)

        def grow(a: np.ndarray, mode: str, value: int = 0) -> np.ndarray:
            pad = [(0, 0)] * (a.ndim - 2) + [(0, height - a.shape[-2]), (0, width - a.shape[-1])]
            if mode == "symmetric":
                return np.pad(a, pad, mode=mode)
            return np.pad(a, pad, constant_values=value)

        images = np.concatenate([grow(p.images, "symmetric") for p in parts])
        targets = np.concatenate([grow(p.targets, "symmetric") for p in parts])
        loss_weights = np.concatenate([grow(p.weights, "constant") for p in parts])
        annotated = np.concatenate([grow(p.labels, "constant") for p in parts])
        used = loss_weights > 0
        use = _combined_use(parts, used, annotated)
        centres = None
        if use.sparse_slices:  # a part painted in full may centre tiles on any used pixel
            centres = np.concatenate(
                [
                    grow(p.centres if p.centres is not None else p.weights > 0, "constant")
                    for p in parts
                ]
            )
            validation, validation_weights = _hold_out_cells(
                annotated, used, loss_weights, tuple(indices), validation_fraction, use
            )
        else:
            validation, validation_weights = _hold_out(
                annotated, used, loss_weights, tuple(indices), validation_fraction
            )
        if validation is not None:
            region = (slice(validation.y0, validation.y1), slice(validation.x0, validation.x1))
            loss_weights[validation.index][region][validation.mask] = 0.0
        taught = None
        if use.sparse_slices and any(teachers[n] is not None for n in numbers):
            rows = [
                np.full(p.labels.shape, TEACHER_UNSURE, np.uint8)
                if teachers[n] is None
                else _teacher_rows(teachers[n], p.labels.shape[-2:], p.slice_indices)
                for n, p in zip(numbers, parts, strict=True)
            ]
            teacher = np.concatenate([grow(r, "constant", TEACHER_UNSURE) for r in rows])
            taught = _teach(targets, loss_weights, teacher, use, validation)
            real = sum(p.labels.size for p in parts)
            use = replace(use, teacher_fraction=float(np.count_nonzero(taught)) / real)
        return cls(
            images=images,
            targets=targets,
            weights=loss_weights,
            labels=annotated,
            slice_indices=tuple(indices),
            n_classes=n_classes,
            validation=validation,
            validation_weights=validation_weights,
            normalisation={
                "percentiles": [float(p) for p in percentiles],
                "per_image": True,
                "scale": scale,
                "diameter_px": None if diameter is None else round(diameter, 2),
            },
            weight_settings=parts[0].weight_settings,
            use=use,
            unpainted=unpainted,
            centres=centres,
            taught=taught,
        )


def _combined_use(
    parts: Sequence[TrainingData], used: np.ndarray, annotated: np.ndarray
) -> AnnotationUse:
    """The pairs' `AnnotationUse` as one: counts added, slices numbered over all pairs
    (rows of the stacked arrays), the used share of the real pixels (not the padding)."""
    sparse, row = [], 0
    for part in parts:
        sparse += [row + i for i in part.use.sparse_slices]
        row += len(part.labels)
    n_cells = sum(p.use.n_cells for p in parts)
    return AnnotationUse(
        n_cells=n_cells,
        n_background_strokes=sum(p.use.n_background_strokes for p in parts),
        used_fraction=float(np.count_nonzero(used)) / sum(p.labels.size for p in parts),
        sparse_slices=tuple(sparse),
        n_slices=row,
        n_images=len(parts),
        warnings=_use_warnings(
            n_cells, int(np.count_nonzero(used & (annotated == 0))), bool(sparse)
        ),
    )


def _teacher_rows(
    teacher: np.ndarray, shape: tuple[int, ...], indices: Sequence[int]
) -> np.ndarray:
    """A start model's sure classes (the labels' shape, before any resize) as the
    training rows ``indices`` at the training size ``shape`` (Y, X)."""
    teacher = np.asarray(teacher, dtype=np.uint8).reshape(-1, *np.shape(teacher)[-2:])
    if teacher.shape[-2:] != tuple(shape):
        teacher = size.resize(teacher, (len(teacher), *shape), labels=True)
    return teacher[list(indices)]


def _scaled_box(box: Box, factor: float) -> Box:
    def at(v: int) -> int:
        return round(v * factor)

    return Box(
        box.slice_index,
        at(box.y0),
        at(box.x0),
        max(at(box.y1), at(box.y0) + 1),
        max(at(box.x1), at(box.x0) + 1),
    )


def _as_box(box: BoxLike, n_slices: int) -> Box:
    if not isinstance(box, Box):
        if len(box) != 5:
            raise InputError(
                f"training region {box!r}: expected (slice_index or None, y0, x0, y1, x1)"
            )
        box = Box(*(None if v is None else int(v) for v in box))  # type: ignore[arg-type]
    if box.slice_index is not None and not 0 <= box.slice_index < n_slices:
        raise InputError(f"training region on slice {box.slice_index}: the image has {n_slices}")
    if not (box.y1 > box.y0 and box.x1 > box.x0):
        raise InputError(f"training region {box}: empty rectangle")
    return box


def _training_region(
    labels: np.ndarray, boxes: list[Box], strokes: np.ndarray | None = None
) -> tuple[np.ndarray, tuple[int, ...]]:
    """Mask of usable pixels per slice and the slices that have any.

    Without boxes: every slice holding a label (or a background stroke), whole. With
    boxes: the box pixels on slices holding a label, plus slices where a box was drawn
    for that slice alone (a box on an empty slice says "no cells here"), plus strokes.
    """
    has_label = labels.reshape(labels.shape[0], -1).any(axis=1)
    if strokes is not None:
        has_label |= strokes.reshape(strokes.shape[0], -1).any(axis=1)
    used = np.zeros(labels.shape, dtype=bool)
    if not boxes:
        used[has_label] = True
    for b in boxes:
        rows, cols = slice(max(b.y0, 0), max(b.y1, 0)), slice(max(b.x0, 0), max(b.x1, 0))
        if b.slice_index is None:
            used[has_label, rows, cols] = True
        else:
            used[b.slice_index, rows, cols] = True
    if strokes is not None and boxes:
        used |= strokes
    indices = tuple(int(i) for i in np.flatnonzero(used.reshape(len(used), -1).any(axis=1)))
    return used, indices


def _background_strokes(background: np.ndarray | None, labels: np.ndarray) -> np.ndarray:
    """Bool (N, Y, X): stroke pixels not painted as a cell (a painted cell wins)."""
    if background is None:
        return np.zeros(labels.shape, dtype=bool)
    strokes = np.asarray(background)
    strokes = strokes if strokes.ndim == 3 else strokes[None]
    if strokes.shape != labels.shape:
        raise InputError(
            f"background strokes have shape {np.asarray(background).shape} but the labels "
            f"have {labels.shape[1:] if labels.shape[0] == 1 else labels.shape}: paint them "
            "on a layer of the image's shape"
        )
    return (strokes != 0) & (labels == 0)


def _boxed_slices(boxes: list[Box], indices: tuple[int, ...]) -> np.ndarray:
    """Bool per annotated slice: a training box covers it (it is then never sparse)."""
    if any(b.slice_index is None for b in boxes):
        return np.ones(len(indices), dtype=bool)
    on = {b.slice_index for b in boxes}
    return np.array([i in on for i in indices], dtype=bool)


def band_px(labels: np.ndarray) -> int:
    """Width (pixels) of the background band around painted cells: ~half a cell diameter."""
    ids, areas = np.unique(labels[labels > 0], return_counts=True)
    if not ids.size:
        return MIN_BAND_PX
    diameter = 2.0 * np.sqrt(np.median(areas) / np.pi)
    return int(np.clip(round(BAND_FRACTION * diameter), MIN_BAND_PX, MAX_BAND_PX))


def _cell_like(image: np.ndarray, cells: np.ndarray, band: np.ndarray) -> np.ndarray | None:
    """Pixels whose intensity is on the painted cells' side of the cells/band midpoint.

    None when cells and band are not clearly apart (e.g. phase contrast, where intensity
    alone does not tell cells from background).
    """
    inside, around = image[cells], image[band]
    if inside.size < 8 or around.size < 8:
        return None
    mu_c, mu_b = float(np.median(inside)), float(np.median(around))
    spread = np.sqrt(0.5 * (inside.var() + around.var())) + 1e-6
    if abs(mu_c - mu_b) / spread < LOOKALIKE_SEPARATION:
        return None
    middle = 0.5 * (mu_c + mu_b)
    return image > middle if mu_c > mu_b else image < middle


def _clear_background(
    image: np.ndarray, cells: np.ndarray, band: np.ndarray, cell_like: np.ndarray, width: int
) -> np.ndarray:
    """Pixels that are background beyond doubt: darker (or brighter, for dark cells) than
    the typical band pixel and farther than a band from anything that looks like a cell.

    Only used when intensity separates cells from background (see `_cell_like`); it lets
    a few painted cells teach "not a cell" over the whole image, not only next to them.
    """
    from scipy import ndimage as ndi

    mu_c, mu_b = float(np.median(image[cells])), float(np.median(image[band]))
    beyond = image < mu_b if mu_c > mu_b else image > mu_b
    far = ndi.distance_transform_edt(~(cell_like | cells)) > width
    return beyond & far


class Informative(NamedTuple):
    """What `informative_region` found: masks (N, Y, X) and the summary."""

    used: np.ndarray  # pixels with a loss weight
    centres: np.ndarray  # where training tiles may be centred
    touching: np.ndarray  # gap pixels between a painted cell and an unpainted neighbour
    use: AnnotationUse


def informative_region(
    labels: np.ndarray,
    used: np.ndarray,
    strokes: np.ndarray,
    boxed: np.ndarray,
    unpainted: str = "auto",
    images: np.ndarray | None = None,
    cell_hint: np.ndarray | None = None,
) -> Informative:
    """Where the annotation teaches something, per slice of (N, Y, X) ``labels``.

    A slice is *sparse* when ``unpainted`` is "ignore", or "auto", no box covers it and
    many unpainted pixels look like the painted cells (see ``UNPAINTED_CELLS_RATIO``;
    by painted area when intensity cannot tell). On a sparse
    slice the used pixels are the painted cells, a band of ``band_px`` around them (minus
    pixels that look like the painted cells, when ``images`` tells), the background
    strokes and, when intensity separates cells from background, clear background far
    from anything cell-like (`_clear_background`); elsewhere ``used`` is kept (whole slice or boxes).
    Where intensity cannot tell (phase contrast), ``cell_hint`` (N, Y, X bool: where a
    model already sees cells) marks the cell-like pixels instead: touching unpainted
    cells then stay out of the band (otherwise taught, and scored, as background).
    Returns the new mask,
    where tiles may be centred (on sparse slices: cells, band and strokes only) and an
    `AnnotationUse` with warnings when the annotation cannot teach much.
    """
    if unpainted not in UNPAINTED:
        raise InputError(f"unpainted must be one of {UNPAINTED}; got {unpainted!r}")
    from scipy import ndimage as ndi

    used = used.copy()
    centres = used.copy()
    touching = np.zeros(used.shape, dtype=bool)
    sparse: list[int] = []
    n_strokes = count_strokes(strokes)
    for i, plane in enumerate(labels):
        cells = plane > 0
        if unpainted == "background" or (unpainted == "auto" and boxed[i]):
            continue
        width = band_px(plane)
        near = ndi.distance_transform_edt(~cells) <= width if cells.any() else cells
        band = near & ~cells
        cell_like = None if images is None else _cell_like(images[i], cells, band)
        hinted = cell_like is None and cell_hint is not None
        if hinted:
            cell_like = cell_hint[i] | cells
        if unpainted == "auto":
            if cell_like is None:  # intensity says nothing: judge by the painted area
                is_sparse = np.count_nonzero(cells) < SPARSE_MAX_COVERAGE * cells.size
            else:  # many unpainted pixels away from the cells look like cells
                unpainted_cells = np.count_nonzero(cell_like & ~near)
                is_sparse = unpainted_cells > UNPAINTED_CELLS_RATIO * np.count_nonzero(cells)
            if not is_sparse:
                continue
        sparse.append(i)
        used[i] = cells | strokes[i]
        if cell_like is not None:
            # The pixels right outside a painted cell are its outline's gap, even where
            # an unpainted neighbour touches it: background, weighted like a gap.
            ring = band & (ndi.distance_transform_edt(~cells) <= RING_PX)
            touching[i] = ring & cell_like
            band &= ~cell_like | ring
            if AUTO_BACKGROUND and not hinted:  # its intensity test needs the contrast
                used[i] |= _clear_background(images[i], cells, band, cell_like, width)
        used[i] |= band
        centres[i] = cells | band | strokes[i]
    n_cells = int(np.count_nonzero(np.unique(labels)))
    background = int(np.count_nonzero(used & (labels == 0)))
    use = AnnotationUse(
        n_cells=n_cells,
        n_background_strokes=n_strokes,
        used_fraction=float(np.count_nonzero(used)) / used.size,
        sparse_slices=tuple(sparse),
        n_slices=len(labels),
        warnings=_use_warnings(n_cells, background, bool(sparse)),
    )
    return Informative(used, centres, touching, use)


def _use_warnings(n_cells: int, background_px: int, sparse: bool) -> tuple[str, ...]:
    """Why an annotation cannot teach much: no cells, no background (then it cannot
    teach "not a cell"), or too few sparse cells to hold any out."""
    if n_cells == 0:
        return ("no cells painted: the model can only learn what background is",)
    if background_px == 0:
        return (
            "no background anywhere: paint background strokes or draw a training box "
            "that includes background",
        )
    if sparse and n_cells < MIN_CELLS_FOR_HOLD_OUT:
        return (
            f"only {n_cells} painted cell(s): paint 5-20 for a useful model (none can be "
            "held out to check it)",
        )
    return ()


def _teach(
    targets: np.ndarray,
    loss_weights: np.ndarray,
    teacher: np.ndarray,
    use: AnnotationUse,
    validation: ValidationRegion | None,
) -> np.ndarray:
    """On sparse slices, pixels without a loss weight that the start model is sure about
    (``teacher`` (N, Y, X): its class, `TEACHER_UNSURE` elsewhere) take its class as target
    with weight `TEACHER_WEIGHT`, in place. The held-out box stays out, so validation
    still scores cells nobody taught. Returns the taught pixels.

    Why: with a few painted cells, most of the image carries no loss, and fine-tuning a
    good starter drifts on the unpainted cells it already segments. Measured on the
    painted-cells curve (docs/accuracy.md, *A few painted cells on real images*): mean AP@0.5 gain
    over the starter +0.025 against +0.017 without, on the same runs.
    """
    taught = np.zeros(targets.shape, dtype=bool)
    for i in use.sparse_slices:
        taught[i] = (loss_weights[i] == 0) & (teacher[i] < TEACHER_UNSURE)
    if validation is not None:
        box = (slice(validation.y0, validation.y1), slice(validation.x0, validation.x1))
        taught[validation.index][box] = False
    targets[taught] = teacher[taught]
    loss_weights[taught] = TEACHER_WEIGHT
    return taught


def _targets(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Class per pixel: the separated foreground (touching cells split by a gap) is 1.

    With 3 classes, each cell's outline and the separation gaps are class 2 ("border").
    A (Y, X) image or a stack, outlines slice by slice.
    """
    separated = weight_maps.separate_touching(labels)
    targets = (separated > 0).astype(np.uint8)
    if n_classes == 3:
        from skimage.segmentation import find_boundaries

        planes = separated.reshape((-1,) + separated.shape[-2:])
        outline = np.stack([find_boundaries(s, mode="inner") for s in planes])
        outline = outline.reshape(separated.shape)
        targets[((labels > 0) & (separated == 0)) | outline] = 2
    return targets


# Hold out a whole slice only when at least this many slices carry cells.
MIN_SLICES_FOR_SLICE_HOLD_OUT = 3


def _hold_out(
    labels: np.ndarray,
    used: np.ndarray,
    loss_weights: np.ndarray,
    indices: tuple[int, ...],
    fraction: float,
) -> tuple[ValidationRegion | None, np.ndarray | None]:
    """The last slice with cells when three or more have cells, else a band of one
    (bottom, or top when only the top band has cells; none when neither has).

    Slices with cells are preferred so that the validation IoU means something. With
    only two annotated slices a whole held-out slice would halve the training data
    (measured on the synthetic stack: AP@0.5 0.82 vs 0.9 with a band), so a band it is.
    """
    if fraction <= 0:
        return None, None
    with_cells = [i for i in range(len(indices)) if (labels[i] * used[i]).any()]
    if len(with_cells) >= MIN_SLICES_FOR_SLICE_HOLD_OUT:
        index = with_cells[-1]
        mask = used[index]
    else:
        found = None
        # the bottom band of the last slice with cells, else its top band, else the same
        # on earlier slices (a band without cells scores IoU 1 at every step and cannot
        # pick the best model); none when no band has cells
        for index in reversed(with_cells or [len(indices) - 1]):
            rows = np.flatnonzero(used[index].any(axis=1))
            height = int(rows[-1] + 1 - rows[0])
            band = round(fraction * height)
            if band < MIN_VALIDATION_ROWS or height - band < MIN_VALIDATION_ROWS:
                continue
            for start in (rows[-1] + 1 - band, rows[0]):
                mask = np.zeros_like(used[index])
                mask[start : start + band] = used[index, start : start + band]
                if not with_cells or (labels[index] * mask).any():
                    found = index, mask
                    break
            if found:
                break
        if found is None:
            return None, None
        index, mask = found
    return _region_of(mask, index, indices, loss_weights)


def _region_of(
    mask: np.ndarray, index: int, indices: tuple[int, ...], loss_weights: np.ndarray
) -> tuple[ValidationRegion, np.ndarray]:
    """The held-out region: the bounding box of ``mask`` on data slice ``index``."""
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
    region = ValidationRegion(
        index=index,
        slice_index=indices[index],
        y0=y0,
        x0=x0,
        y1=y1,
        x1=x1,
        mask=mask[y0:y1, x0:x1].copy(),
    )
    validation_weights = loss_weights[index, y0:y1, x0:x1] * region.mask
    return region, validation_weights.astype(np.float32)


def _hold_out_cells(
    labels: np.ndarray,
    used: np.ndarray,
    loss_weights: np.ndarray,
    indices: tuple[int, ...],
    fraction: float,
    use: AnnotationUse,
) -> tuple[ValidationRegion | None, np.ndarray | None]:
    """Sparse painting: hold out ``fraction`` of the painted cells (at least one) with
    their band, neighbours of each other so that the region to predict stays small.

    A band of rows would hold out few or no painted cells; these held-out cells are
    cells the model has never seen, like the unpainted ones it should find.
    """
    from scipy import ndimage as ndi

    if fraction <= 0 or use.n_cells < MIN_CELLS_FOR_HOLD_OUT:
        return None, None
    counts = [len(np.unique(labels[i])) - 1 for i in use.sparse_slices]
    index = use.sparse_slices[int(np.argmax(counts))]
    plane = labels[index]
    ids = np.unique(plane)
    ids = ids[ids > 0]
    if len(ids) < 2:
        return None, None
    centres = np.array(ndi.center_of_mass(np.ones_like(plane), plane, ids))
    n_held = max(1, int(round(fraction * len(ids))))
    seed = centres[-1]  # the last painted cell and its nearest painted neighbours
    held = ids[np.argsort(np.hypot(*(centres - seed).T))[:n_held]]
    near = ndi.distance_transform_edt(~np.isin(plane, held)) <= band_px(plane)
    mask = near & used[index]
    if not mask.any():
        return None, None
    return _region_of(mask, index, indices, loss_weights)


def training_layout(
    image: np.ndarray,
    labels: np.ndarray,
    found: Any,
    channels: Sequence[int] | None,
    background: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, int, np.ndarray | None]:
    """(T, Z, C, Y, X) -> what `TrainingData` takes: image (N, [C,] Y, X), labels
    (N, Y, X), the channel count, and ``background`` laid out as the labels are.
    ``found``: the image's `core.axes.Axes`."""
    from napari_unet.core import axes as axes_

    if found.order in ("YX", "ZYX") and channels is None:  # as given: 2D keeps its slice 0
        return image, labels, 1, background
    x = axes_.pick_channels(axes_.to_tzcyx(image, found), channels)
    y = axes_.labels_to_tzyx(as_labels(labels, "labels", max_ndim=4), found)
    n = x.shape[0] * x.shape[1]
    if background is not None:
        bg = axes_.labels_to_tzyx(np.asarray(background) != 0, found)
        background = bg.reshape(n, *bg.shape[2:])
    stack = x.reshape(n, *x.shape[2:])
    image = stack[:, 0] if stack.shape[1] == 1 else stack
    return image, y.reshape(n, *y.shape[2:]), stack.shape[1], background


def describe_use(
    image: np.ndarray,
    labels: np.ndarray,
    regions: Sequence[BoxLike] | None = None,
    background: np.ndarray | None = None,
    unpainted: str = "auto",
    axes: str | None = None,
) -> AnnotationUse:
    """What training would use, without building targets and weights.

    Cheap enough to refresh after brush strokes (the Train dock's summary line). The
    image is laid out (``axes``: `core.axes` letters, None: guessed) and normalised as
    training does it: RGB and extra channels, each time point of a time-lapse alone.
    """
    from napari_unet.core import axes as axes_

    found = axes_.parse(axes, np.shape(image))
    image, labels, channels, background = training_layout(image, labels, found, None, background)
    labels = as_labels(labels, "labels")
    label_stack = labels if labels.ndim == 3 else labels[None]
    strokes = _background_strokes(background, label_stack)
    boxes = [_as_box(b, label_stack.shape[0]) for b in regions or []]
    used, indices = _training_region(label_stack, boxes, strokes)
    if not indices:
        return AnnotationUse(0, 0, 0.0, (), 0, ("nothing is annotated yet",))
    stack = as_image(image, "image", channels=channels)
    plain = normalize_stack(stack, list(indices), frames=found.size("T"))[0]
    return informative_region(
        label_stack[list(indices)],
        used[list(indices)],
        strokes[list(indices)],
        _boxed_slices(boxes, indices),
        unpainted,
        images=plain.mean(axis=1),
    ).use


class TileSampler:
    """Random training tiles: input ``in_size`` with mirrored context, loss on the centre.

    Target and weights come at the input size too (augmentation needs them there); the
    loss uses the centre ``out_size`` crop. Tiles are centred near a random training
    pixel. Outside the image, the image and targets are mirrored and the weights are 0.
    """

    def __init__(
        self, data: TrainingData, in_size: int, out_size: int, seed: int | None = 0
    ) -> None:
        if (in_size - out_size) % 2 or out_size < 1:
            raise InputError(f"tile sizes {in_size} -> {out_size}: context must be symmetric")
        self.data = data
        self.in_size = int(in_size)
        self.out_size = int(out_size)
        self.context = (self.in_size - self.out_size) // 2
        self.rng = np.random.default_rng(seed)
        pad = self.in_size
        spatial = ((0, 0), (pad, pad), (pad, pad))
        self._pad = pad
        self._images = np.pad(data.images, ((0, 0),) + spatial, mode="reflect")
        self._targets = np.pad(data.targets, spatial, mode="reflect")
        self._weights = np.pad(data.weights, spatial)
        where = data.weights > 0
        if data.centres is not None and (where & data.centres).any():
            where &= data.centres  # sparse painting: tiles around the painted cells
        candidates = np.flatnonzero(where)
        if candidates.size == 0:
            raise InputError(
                "labels: no annotated pixels are left for training after the validation "
                "hold-out; annotate more cells or another slice"
            )
        if candidates.size > MAX_CANDIDATES:
            candidates = self.rng.choice(candidates, MAX_CANDIDATES, replace=False)
        self._candidates = candidates

    def sample(self, batch: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(image (B, C, in, in) float32, target (B, in, in) int64, weights (B, in, in) float32)."""
        _, height, width = self.data.weights.shape
        picks = self.rng.choice(self._candidates, batch)
        n, y, x = np.unravel_index(picks, self.data.weights.shape)
        # output window containing the picked pixel at a random place
        oy = y - self.rng.integers(0, self.out_size, batch)
        ox = x - self.rng.integers(0, self.out_size, batch)
        images, targets, weights = [], [], []
        for i in range(batch):
            top = oy[i] - self.context + self._pad
            left = ox[i] - self.context + self._pad
            rows, cols = slice(top, top + self.in_size), slice(left, left + self.in_size)
            images.append(self._images[n[i], :, rows, cols])
            targets.append(self._targets[n[i], rows, cols])
            weights.append(self._weights[n[i], rows, cols])
        return (
            np.stack(images).astype(np.float32, copy=False),
            np.stack(targets).astype(np.int64),
            np.stack(weights).astype(np.float32, copy=False),
        )
