"""Where the model is unsure: an uncertainty map, a confidence per predicted object, and
proposals of where to annotate next.

The uncertainty map comes from several predictions of the same image (the 8 flips /
rotations, or Monte-Carlo dropout). Each object's confidence combines how certain the
model is inside it with how stable the object is across those predictions (each one
turned into labels on its own); its outline, size and shape next to the annotated cells
are reported too. Pure numpy/scipy/skimage (torch only to sample); no drawing.
"""

from __future__ import annotations

import copy
import csv
from collections.abc import Callable, Generator, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from napari_unet.core import metrics
from napari_unet.core.annotations import Box
from napari_unet.core.events import Done
from napari_unet.core.io import InputError

METHODS = ("tta", "dropout")
TTA_SAMPLES = 8  # the dihedral group of the square: 4 rotations x (flip or not)
DROPOUT_SAMPLES = 8
BAND_PX = 2  # outline band: this many pixels inside and outside each object


# --- sampling ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Samples:
    """Summary of several predictions of one image.

    ``probabilities``: their mean, float32 (n_classes, Y, X) (what labels are made from);
    ``uncertainty``: float32 (Y, X) in [0, 1], see `uncertainty_map`; ``labels``: each
    prediction turned into instance labels on its own (when `sample_iter` got
    ``to_labels``), for `stability`.
    """

    probabilities: np.ndarray
    uncertainty: np.ndarray
    labels: tuple[np.ndarray, ...] = ()


def _dihedral(image: np.ndarray, k: int, flip: bool, inverse: bool = False) -> np.ndarray:
    """One of the 8 flips/rotations of the last two axes, or its inverse."""
    if not inverse:
        image = image[..., ::-1] if flip else image
        return np.rot90(image, k, axes=(-2, -1))
    image = np.rot90(image, -k, axes=(-2, -1))
    return image[..., ::-1] if flip else image


def _dropout_net(net: Any) -> Any:
    """A copy of ``net`` whose dropout stays on at prediction time (Monte-Carlo dropout)."""
    import torch

    class AlwaysDropout(torch.nn.Module):
        def __init__(self, p: float) -> None:
            super().__init__()
            self.p = p

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.dropout(x, self.p, training=True)

    p = float(net.config.get("dropout", 0.0))
    if p <= 0:
        raise InputError(
            "This model has no dropout, so Monte-Carlo dropout cannot sample it; "
            "use the flips/rotations (tta) instead."
        )
    mc = copy.deepcopy(net)
    mc.dropout = AlwaysDropout(p)
    return mc


def uncertainty_map(foreground: np.ndarray) -> np.ndarray:
    """Per-pixel uncertainty in [0, 1]: ``1 - |2p - 1|`` of the cell probability ``p``.

    0 where the model is sure (p = 0 or 1), 1 at p = 0.5. Given the *mean* over samples
    it is also high where the samples disagree (their mean is pulled toward 0.5). On the
    development data its mean inside an object ranked wrong objects better than the
    binary entropy, the samples' standard deviation or their mutual information
    (README, Review).
    """
    p = np.asarray(foreground, dtype=np.float32)
    return (1.0 - np.abs(2.0 * p - 1.0)).clip(0.0, 1.0).astype(np.float32)


def sample_iter(
    net: Any,
    image: np.ndarray,
    method: str = "tta",
    n_samples: int | None = None,
    tile_size: int | None = None,
    batch_size: int | None = None,
    device: Any = None,
    seed: int = 0,
    to_labels: Callable[[np.ndarray], np.ndarray] | None = None,
) -> Generator[Done, None, Samples]:
    """Predict a normalised (C, Y, X) image several times and summarise the disagreement.

    ``method``: "tta" predicts the 8 flips/rotations of the image (each through the whole
    overlap-tile pipeline, then turned back); "dropout" keeps the model's dropout on for
    ``n_samples`` passes. ``to_labels`` (probabilities -> instance labels, the caller's
    post-processing) is applied to every prediction as it comes, so only its labels are
    kept. Yields `Done` (tiles over all samples) and returns `Samples`.
    """
    import torch

    from napari_unet.core import tiling

    if method not in METHODS:
        raise InputError(f"uncertainty method must be one of {METHODS}; got {method!r}")
    image = np.asarray(image, dtype=np.float32)
    if method == "tta":
        transforms = [(k, flip) for flip in (False, True) for k in range(4)][: n_samples or 8]
        model = net
    else:
        transforms = [(0, False)] * (n_samples or DROPOUT_SAMPLES)
        model = _dropout_net(net)
    total_samples = len(transforms)
    mean, sample_labels = None, []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for index, (k, flip) in enumerate(transforms):
            x = np.ascontiguousarray(_dihedral(image, k, flip))
            events = tiling.predict_tiled_iter(model, x, tile_size, batch_size, device)
            while True:
                try:
                    event = next(events)
                except StopIteration as stop:
                    probabilities = _dihedral(stop.value, k, flip, inverse=True)
                    break
                yield Done(index * event.total + event.done, total_samples * event.total)
            probabilities = np.ascontiguousarray(probabilities, dtype=np.float32)
            if to_labels is not None:
                sample_labels.append(to_labels(probabilities))
            mean = probabilities if mean is None else mean + probabilities
    mean /= total_samples
    return Samples(mean, uncertainty_map(mean[1:].sum(axis=0)), tuple(sample_labels))


# --- per-object confidence -----------------------------------------------------------------

# Exponents of the factors in the confidence (a weighted geometric mean). Chosen by a grid
# search on 12 development images (DSB 2018 fluorescence, starter model, flips/rotations):
# certainty and stability together ranked wrong objects best (AUROC 0.853 there); adding
# the outline, size or shape lowered it, so they are reported but weigh 0 (README, Review).
WEIGHTS = {"certainty": 1.0, "stability": 2.0, "boundary": 0.0, "size": 0.0, "shape": 0.0}
MIN_REFERENCE_CELLS = 5  # fewer annotated cells: the prediction's own objects are the reference
LOG_AREA_SPREAD_MIN = 0.1  # floor of the robust spread of log(area)
SOLIDITY_SPREAD_MIN = 0.05  # floor of the robust spread of solidity
DOUBTFUL = 0.8  # a factor below this is named as a reason


@dataclass(frozen=True)
class Reference:
    """What a plausible cell looks like: robust centre and spread of log(area) and solidity."""

    log_area: float
    log_area_spread: float
    solidity: float
    solidity_spread: float
    n_cells: int

    @property
    def typical_area_px(self) -> float:
        return float(np.exp(self.log_area))

    @property
    def typical_diameter_px(self) -> float:
        return float(2 * np.sqrt(self.typical_area_px / np.pi))


def _robust(values: np.ndarray, floor: float) -> tuple[float, float]:
    centre = float(np.median(values))
    return centre, max(1.4826 * float(np.median(np.abs(values - centre))), floor)


def _areas_solidities(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ids, pixel areas and solidity (area / convex hull area) of every object of a 2D image."""
    from skimage.measure import regionprops

    props = regionprops(labels)
    ids = np.array([p.label for p in props], dtype=np.int64)
    areas = np.array([p.area for p in props], dtype=np.float64)
    solidity = np.array([p.solidity for p in props], dtype=np.float64)
    return ids, areas, solidity


def reference_from(labels: np.ndarray) -> Reference | None:
    """The cells of instance labels (2D, or a stack slice by slice) as a `Reference`;
    None when fewer than `MIN_REFERENCE_CELLS` are there."""
    labels = np.asarray(labels)
    planes = [labels] if labels.ndim == 2 else list(labels.reshape(-1, *labels.shape[-2:]))
    parts = [_areas_solidities(p) for p in planes if p.any()]
    if not parts:
        return None
    areas = np.concatenate([a for _, a, _ in parts])
    solidity = np.concatenate([s for _, _, s in parts])
    if len(areas) < MIN_REFERENCE_CELLS:
        return None
    log_area, log_spread = _robust(np.log(areas), LOG_AREA_SPREAD_MIN)
    sol, sol_spread = _robust(solidity, SOLIDITY_SPREAD_MIN)
    return Reference(log_area, log_spread, sol, sol_spread, len(areas))


@dataclass(frozen=True)
class ObjectScore:
    """One predicted object: ``confidence`` in [0, 1] (higher = more likely right), the
    factors it is made of (each in [0, 1]), and a short ``reason`` when it is doubtful."""

    id: int
    confidence: float
    area: int  # pixels
    certainty: float  # 1 - mean uncertainty inside
    stability: float  # mean best IoU with the objects of each sampled prediction (1: none given)
    boundary: float  # 1 - mean uncertainty on a band around the outline
    size: float  # area plausible next to the reference cells
    shape: float  # solidity (convexity) plausible next to the reference cells
    reason: str
    slice: int | None  # stack index, None for a 2D image
    y: float  # centroid, pixels
    x: float
    bbox: tuple[int, int, int, int]  # y0, x0, y1, x1 (exclusive)


def _outline_band(labels: np.ndarray, band_px: int) -> np.ndarray:
    """Each object's id on the pixels within ``band_px`` of its outline (inside and outside)."""
    from skimage.segmentation import expand_labels

    size = (2 * band_px + 1,) * 2
    inner = (labels > 0) & (
        (ndi.grey_erosion(labels, size=size) != labels)
        | (ndi.grey_dilation(labels, size=size) != labels)
    )
    grown = expand_labels(labels, band_px)
    return np.where(inner, labels, np.where(labels == 0, grown, 0))


def stability(
    labels: np.ndarray, sample_labels: Sequence[np.ndarray], ids: np.ndarray
) -> np.ndarray:
    """Per object of ``ids``: its best IoU with any object of each sampled prediction's
    labels (`metrics.match`), averaged over the samples (1 = found alike every time; a
    cell that one flip splits or merges scores lower). Ones when no samples are given."""
    total = np.zeros(len(ids))
    for other in sample_labels:
        m = metrics.match(labels, other)
        best = np.zeros(len(m.gt_ids))
        np.maximum.at(best, m.pair_gt, m.iou)
        total += best[np.searchsorted(m.gt_ids, ids)]
    return total / len(sample_labels) if len(sample_labels) else np.ones(len(ids))


def _reason(factors: dict[str, float], area: float, solidity: float, ref: Reference) -> str:
    """Words for the weakest factor below `DOUBTFUL` (empty when none is)."""
    name = min(factors, key=factors.get)
    value = factors[name]
    if value >= DOUBTFUL:
        return ""
    if name == "certainty":
        return f"model unsure inside (certainty {value:.2f})"
    if name == "stability":
        return f"changes between flips: split or merged? (stability {value:.2f})"
    if name == "boundary":
        return f"blurred outline (certainty {value:.2f})"
    if name == "size":
        ratio = area / ref.typical_area_px
        kind = "small: a fragment or debris?" if ratio < 1 else "large: merged cells?"
        return f"{kind} ({ratio:.2g}x the typical area)"
    return f"irregular shape: merged or ragged? (solidity {solidity:.2f})"


def score_objects(
    labels: np.ndarray,
    uncertainty: np.ndarray,
    reference: Reference | None = None,
    slice_index: int | None = None,
    band_px: int = BAND_PX,
    sample_labels: Sequence[np.ndarray] = (),
) -> list[ObjectScore]:
    """Confidence of every object of a 2D label image, in id order.

    ``uncertainty``: `uncertainty_map` of the (mean) cell probability. ``reference``
    describes plausible cells (the annotated ones, `reference_from`); without one the
    objects themselves are the reference, so only outliers among them look implausible.
    ``sample_labels``: the labels of each sampled prediction (`Samples.labels`), for
    `stability`; without them every object counts as stable.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2 or np.shape(uncertainty) != labels.shape:
        raise InputError(
            f"score_objects wants a 2D label image and an uncertainty map of the same shape; "
            f"got {labels.shape} and {np.shape(uncertainty)}"
        )
    if any(np.shape(other) != labels.shape for other in sample_labels):
        raise InputError("sample_labels must have the shape of the labels")
    ids, areas, solidity = _areas_solidities(labels)
    if not len(ids):
        return []
    ref = reference or reference_from(labels)
    if ref is None:  # too few objects to say what is typical: judge certainty alone
        ref = Reference(float(np.log(np.median(areas))), np.inf, 1.0, np.inf, len(ids))
    n = int(ids.max()) + 1
    flat, u = labels.ravel(), np.asarray(uncertainty, dtype=np.float64).ravel()
    inside = np.bincount(flat, u, n)[ids] / areas
    band = _outline_band(labels, band_px).ravel()
    band_count = np.bincount(band, minlength=n)[ids]
    on_band = np.bincount(band, u, n)[ids] / np.maximum(band_count, 1)
    z_area = np.abs(np.log(areas) - ref.log_area) / ref.log_area_spread
    z_shape = (ref.solidity - solidity) / ref.solidity_spread
    factors = {
        "certainty": 1.0 - inside,
        "stability": stability(labels, sample_labels, ids),
        "boundary": 1.0 - on_band,
        "size": np.exp(-0.5 * np.maximum(z_area - 1.0, 0.0) ** 2),
        "shape": np.exp(-0.5 * np.maximum(z_shape - 1.0, 0.0) ** 2),
    }
    confidence = np.ones(len(ids))
    for name, weight in WEIGHTS.items():
        confidence *= np.clip(factors[name], 0.0, 1.0) ** weight
    centroids = ndi.center_of_mass(np.ones_like(labels, dtype=np.uint8), labels, ids)
    boxes = ndi.find_objects(labels)
    scores = []
    for i, label in enumerate(ids):
        f = {name: float(np.clip(v[i], 0.0, 1.0)) for name, v in factors.items()}
        rows, cols = boxes[label - 1]
        scores.append(
            ObjectScore(
                id=int(label),
                confidence=float(confidence[i]),
                area=int(areas[i]),
                certainty=f["certainty"],
                stability=f["stability"],
                boundary=f["boundary"],
                size=f["size"],
                shape=f["shape"],
                reason=_reason(f, areas[i], solidity[i], ref),
                slice=slice_index,
                y=float(centroids[i][0]),
                x=float(centroids[i][1]),
                bbox=(rows.start, cols.start, rows.stop, cols.stop),
            )
        )
    return scores


def worst_first(scores: Sequence[ObjectScore]) -> list[ObjectScore]:
    """Least confident first (ties: larger objects first, then by id)."""
    return sorted(scores, key=lambda s: (s.confidence, -s.area, s.id))


CSV_COLUMNS = (
    "id", "confidence", "area", "reason", "certainty", "stability", "boundary", "size", "shape"
)  # fmt: skip


def write_csv(path: str | Path, scores: Sequence[ObjectScore]) -> Path:
    """One row per object, in id order: `CSV_COLUMNS`, then slice, centroid y, x (pixels)."""
    path = Path(path)
    names = [f.name for f in fields(ObjectScore) if f.name != "bbox"]
    columns = [*CSV_COLUMNS, *(n for n in names if n not in CSV_COLUMNS)]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for s in sorted(scores, key=lambda s: (s.slice or 0, s.id)):
            row = asdict(s)
            for key in ("confidence", "certainty", "stability", "boundary", "size", "shape"):
                row[key] = f"{row[key]:.4f}"
            row["y"], row["x"] = f"{s.y:.1f}", f"{s.x:.1f}"
            row["slice"] = "" if s.slice is None else s.slice
            writer.writerow(row)
    return path


# --- where to annotate next ----------------------------------------------------------------

BOX_CELLS = 4  # a proposed box is this many typical cell diameters wide
MIN_BOX_PX, MAX_BOX_PX = 32, 256
NOVELTY_WEIGHT = 1.0  # how much "unlike what is annotated" adds to a box's uncertainty
NOVELTY_CAP = 3.0  # z-distances beyond this count as this


def box_size_px(reference: Reference | None, shape: Sequence[int]) -> int:
    """Edge of a proposed box: `BOX_CELLS` typical cell diameters, within the image."""
    diameter = reference.typical_diameter_px if reference is not None else 16.0
    edge = int(np.clip(round(BOX_CELLS * diameter), MIN_BOX_PX, MAX_BOX_PX))
    return max(1, min(edge, *shape[-2:]))


def _box_sums(values: np.ndarray, edge: int) -> np.ndarray:
    """Sum of ``values`` in every edge x edge window (top-left corners), via a summed-area table."""
    table = np.pad(np.cumsum(np.cumsum(values, 0, dtype=np.float64), 1), ((1, 0), (1, 0)))
    return (
        table[edge:, edge:] - table[:-edge, edge:] - table[edge:, :-edge] + table[:-edge, :-edge]
    )


def _novelty(image: np.ndarray, annotated: np.ndarray, edge: int) -> np.ndarray:
    """Per window (top-left corners), in [0, 1]: how far its intensity mean and spread lie
    from those of the windows holding annotated pixels (weighted by how many), as a
    z-distance over `NOVELTY_CAP`."""
    image = image.astype(np.float64)
    area = float(edge * edge)
    mean = _box_sums(image, edge) / area
    spread = np.sqrt(np.maximum(_box_sums(image**2, edge) / area - mean**2, 0.0))
    weight = _box_sums(annotated.astype(np.float64), edge)
    if not weight.any():
        return np.zeros_like(mean)
    z = []
    for feature in (mean, spread):
        centre = float(np.average(feature, weights=weight))
        sd = np.sqrt(float(np.average((feature - centre) ** 2, weights=weight)))
        floor = 1e-3 + 0.1 * float(np.abs(image).mean())
        z.append((feature - centre) / max(sd, floor))
    return np.minimum(np.hypot(*z), NOVELTY_CAP) / NOVELTY_CAP


def propose_regions(
    uncertainty: np.ndarray,
    annotated: np.ndarray,
    n_boxes: int = 3,
    box_px: int | None = None,
    image: np.ndarray | None = None,
    existing: Sequence[Box] = (),
    slice_index: int | None = None,
    reference: Reference | None = None,
) -> list[Box]:
    """Up to ``n_boxes`` square boxes where annotating should help most, best first.

    A box's score is its mean uncertainty times (1 + novelty), novelty being how far the
    (normalised) ``image``'s mean and spread inside the box lie from the annotated pixels'
    (z-distance, capped; 0 without an image or annotations). Boxes lie inside the image,
    never touch an annotated pixel (``annotated`` True / label > 0) or an ``existing``
    box, and do not overlap one another; fewer come back when no such place is left.
    """
    uncertainty = np.asarray(uncertainty, dtype=np.float64)
    annotated = np.asarray(annotated) > 0
    if uncertainty.ndim != 2 or annotated.shape != uncertainty.shape:
        raise InputError(
            f"propose_regions wants 2D uncertainty and annotations of the same shape; got "
            f"{uncertainty.shape} and {annotated.shape}"
        )
    height, width = uncertainty.shape
    edge = box_px or box_size_px(reference, uncertainty.shape)
    edge = int(min(edge, height, width))
    area = float(edge * edge)
    score = _box_sums(uncertainty, edge) / area
    if image is not None and annotated.any():
        score = score * (1.0 + NOVELTY_WEIGHT * _novelty(np.asarray(image), annotated, edge))
    blocked = annotated.copy()
    for b in existing:
        if b.slice_index in (None, slice_index):
            blocked[b.y0 : b.y1, b.x0 : b.x1] = True
    boxes: list[Box] = []
    for _ in range(n_boxes):
        free = _box_sums(blocked.astype(np.float64), edge) == 0
        if not free.any():
            break
        y0, x0 = np.unravel_index(np.argmax(np.where(free, score, -np.inf)), score.shape)
        box = Box(slice_index, int(y0), int(x0), int(y0) + edge, int(x0) + edge)
        boxes.append(box)
        blocked[box.y0 : box.y1, box.x0 : box.x1] = True
    return boxes
