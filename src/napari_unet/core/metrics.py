"""Segmentation quality: instance matching by IoU, average precision, ISBI 2012 errors.

Pure numpy/scipy, vectorised over pixels (one sparse contingency table per image pair).
Stacks are scored slice by slice and the counts pooled; nothing here draws or trains.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage as ndi
from scipy.optimize import linear_sum_assignment

from napari_unet.core.events import Done, run_to_end
from napari_unet.core.io import InputError

# IoU thresholds of the instance-segmentation literature (COCO; stardist, cellpose report
# AP at these): 0.50, 0.55, ..., 0.95.
IOU_THRESHOLDS: tuple[float, ...] = tuple(round(0.5 + 0.05 * k, 2) for k in range(10))
# The threshold for precision / recall / F1, mean matched IoU and the error layers.
MATCH_THRESHOLD = 0.5
# A predicted object belongs to a ground-truth object (and vice versa) when *more than*
# this fraction of its own area lies inside it; used for split / merge counts.
MAJORITY = 0.5
# Warping error: at most this many sweeps of simple-point flips (each sweep moves every
# boundary by about one pixel, so this allows deformations of up to ~this many pixels).
WARP_MAX_SWEEPS = 200


# --- contingency table and matching --------------------------------------------------------


@dataclass(frozen=True)
class Matching:
    """Objects of one (ground truth, prediction) pair and their overlaps.

    ``gt_ids``/``pred_ids`` are the label values (0 excluded), ``gt_areas``/``pred_areas``
    their pixel counts. The overlapping object pairs are listed sparsely: ``pair_gt`` and
    ``pair_pred`` index ``gt_ids``/``pred_ids``, with ``intersection`` pixels and ``iou``.
    """

    gt_ids: np.ndarray
    pred_ids: np.ndarray
    gt_areas: np.ndarray
    pred_areas: np.ndarray
    pair_gt: np.ndarray
    pair_pred: np.ndarray
    intersection: np.ndarray
    iou: np.ndarray
    n_pixels: int

    def matched(self, threshold: float = MATCH_THRESHOLD) -> np.ndarray:
        """Indices into the pair arrays of an optimal one-to-one matching with IoU >= threshold.

        Above 0.5 every object has at most one partner, so the matching is just the pairs
        over the threshold; at or below 0.5 ties are resolved by
        ``scipy.optimize.linear_sum_assignment`` maximising the number of matches, then
        their summed IoU (as stardist does).
        """
        candidates = np.flatnonzero(self.iou >= threshold)
        gi, pi = self.pair_gt[candidates], self.pair_pred[candidates]
        if len(np.unique(gi)) == len(gi) and len(np.unique(pi)) == len(pi):
            return candidates
        rows, row_of = np.unique(gi, return_inverse=True)
        cols, col_of = np.unique(pi, return_inverse=True)
        bonus = self.iou[candidates] / (2 * min(len(rows), len(cols)))
        cost = np.zeros((len(rows), len(cols)))
        cost[row_of, col_of] = -1.0 - bonus  # a match beats any IoU gain
        r, c = linear_sum_assignment(cost)
        lookup = np.full((len(rows), len(cols)), -1)
        lookup[row_of, col_of] = candidates
        chosen = lookup[r, c]
        return np.sort(chosen[chosen >= 0])


def _check_pair(gt: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    gt, pred = np.asarray(gt), np.asarray(pred)
    if gt.shape != pred.shape:
        raise InputError(
            f"Prediction has shape {pred.shape} but ground truth has {gt.shape}: "
            "compare labels of the same image."
        )
    for name, array in (("ground truth", gt), ("prediction", pred)):
        if not (np.issubdtype(array.dtype, np.integer) or array.dtype == bool):
            raise InputError(f"{name}: labels must be integers; got {array.dtype}")
    return gt, pred


def match(gt: np.ndarray, pred: np.ndarray) -> Matching:
    """Overlap every ground-truth object with every predicted one (any dimension, one image).

    One ``np.unique`` over combined pair codes gives the sparse contingency table; no
    loop over objects or pixels.
    """
    gt, pred = _check_pair(gt, pred)
    gt_values, gt_index = np.unique(gt.ravel(), return_inverse=True)
    pred_values, pred_index = np.unique(pred.ravel(), return_inverse=True)
    n_pred_values = len(pred_values)
    codes, counts = np.unique(
        gt_index.astype(np.int64) * n_pred_values + pred_index, return_counts=True
    )
    rows, cols = codes // n_pred_values, codes % n_pred_values
    gt_sizes = np.bincount(gt_index, minlength=len(gt_values))
    pred_sizes = np.bincount(pred_index, minlength=len(pred_values))

    # Drop label 0 (background) from the objects; shift indices so they index objects.
    gt_offset = int(gt_values[0] == 0) if len(gt_values) else 0
    pred_offset = int(pred_values[0] == 0) if len(pred_values) else 0
    objects = (rows >= gt_offset) & (cols >= pred_offset)
    pair_gt, pair_pred = rows[objects] - gt_offset, cols[objects] - pred_offset
    intersection = counts[objects]
    gt_areas, pred_areas = gt_sizes[gt_offset:], pred_sizes[pred_offset:]
    union = gt_areas[pair_gt] + pred_areas[pair_pred] - intersection
    return Matching(
        gt_ids=gt_values[gt_offset:],
        pred_ids=pred_values[pred_offset:],
        gt_areas=gt_areas,
        pred_areas=pred_areas,
        pair_gt=pair_gt,
        pair_pred=pair_pred,
        intersection=intersection,
        iou=intersection / union,
        n_pixels=int(gt.size),
    )


def _ratio(numerator: float, denominator: float, empty: float) -> float:
    return float(numerator / denominator) if denominator else empty


def average_precision(
    gt: np.ndarray, pred: np.ndarray, thresholds: Sequence[float] = IOU_THRESHOLDS
) -> np.ndarray:
    """AP(t) = TP / (TP + FP + FN) per IoU threshold, as a float array aligned with thresholds.

    The whole array is one image (a stack's objects are 3D objects); see ``evaluate`` for
    slice-by-slice scoring. An empty ground truth and an empty prediction score 1.
    """
    m = match(gt, pred)
    n_gt, n_pred = len(m.gt_ids), len(m.pred_ids)
    tp = np.array([len(m.matched(t)) for t in thresholds], dtype=float)
    return np.array([_ratio(k, n_gt + n_pred - k, 1.0) for k in tp])


def iou_score(gt: np.ndarray, pred: np.ndarray) -> float:
    """Foreground IoU (Jaccard index of ``gt > 0`` and ``pred > 0``); 1 when both are empty."""
    gt, pred = _check_pair(gt, pred)
    a, b = gt > 0, pred > 0
    return _ratio(np.count_nonzero(a & b), np.count_nonzero(a | b), 1.0)


def seg_score(gt: np.ndarray, pred: np.ndarray) -> float:
    """The Cell Tracking Challenge SEG measure: mean over ground-truth objects of the IoU
    with the predicted object covering more than half of it (0 when none does).

    1 when the ground truth is empty.
    """
    m = match(gt, pred)
    if not len(m.gt_ids):
        return 1.0
    best = np.zeros(len(m.gt_ids))
    owner = m.intersection > MAJORITY * m.gt_areas[m.pair_gt]
    best[m.pair_gt[owner]] = m.iou[owner]
    return float(best.mean())


def touching_pairs_separated(gt: np.ndarray, pred: np.ndarray) -> tuple[int, int]:
    """(separated, total) touching ground-truth pairs, per 2D slice.

    A pair of touching cells (8-connected, see ``synthetic.touching_pairs``) is separated
    when both cells are matched (IoU >= 0.5, one-to-one) to two different predicted
    objects: a merged pair, or a missed cell, leaves it unseparated. The paper's point is
    exactly this: the gaps let touching cells come out as separate instances.
    """
    from napari_unet.core.synthetic import touching_pairs

    gt, pred = _check_pair(gt, pred)
    planes = (
        [(gt, pred)]
        if gt.ndim == 2
        else list(
            zip(gt.reshape(-1, *gt.shape[-2:]), pred.reshape(-1, *pred.shape[-2:]), strict=True)
        )
    )
    separated = total = 0
    for g, p in planes:
        pairs = touching_pairs(g)
        if not pairs:
            continue
        m = match(g, p)
        chosen = m.matched(MATCH_THRESHOLD)
        matched_ids = set(m.gt_ids[m.pair_gt[chosen]].tolist())
        total += len(pairs)
        separated += sum(a in matched_ids and b in matched_ids for a, b in pairs)
    return separated, total


def split_merge(m: Matching) -> tuple[np.ndarray, np.ndarray]:
    """Split ground-truth objects and merging predicted objects, as index arrays.

    A predicted object *belongs* to a gt object when more than half of its area lies in
    it; a gt object is **split** when two or more predicted objects belong to it. A gt
    object belongs to a predicted object when more than half of the gt area lies in it;
    a predicted object is a **merge** when two or more gt objects belong to it. The rule
    does not depend on IoU, so a split is counted even if one fragment still matches.
    """
    pred_part = m.intersection / m.pred_areas[m.pair_pred] > MAJORITY
    gt_part = m.intersection / m.gt_areas[m.pair_gt] > MAJORITY
    fragments = np.bincount(m.pair_gt[pred_part], minlength=len(m.gt_ids))
    members = np.bincount(m.pair_pred[gt_part], minlength=len(m.pred_ids))
    return np.flatnonzero(fragments >= 2), np.flatnonzero(members >= 2)


# --- ISBI 2012 measures ------------------------------------------------------------------


def _pairs(n: np.ndarray) -> int:
    n = n.astype(np.int64)
    return int((n * (n - 1) // 2).sum())


def rand_counts(m: Matching) -> tuple[int, int, int]:
    """Pixel-pair counts behind the foreground-restricted Rand F-score.

    Only pixels in the ground-truth foreground count (ISBI 2012, Arganda-Carreras et al.
    2015). Returns (pairs in the same object in both, in the same gt object, in the same
    predicted object). Predicted background pixels are singletons: they join no pair.
    """
    both = _pairs(m.intersection)
    same_gt = _pairs(m.gt_areas)
    pred_in_fg = np.bincount(m.pair_pred, weights=m.intersection, minlength=len(m.pred_ids))
    return both, same_gt, _pairs(pred_in_fg)


def rand_error_from_counts(both: int, same_gt: int, same_pred: int) -> float:
    """1 - F-score of Rand precision (both / same_pred) and recall (both / same_gt).

    A ratio without pairs is vacuously 1 (no pixel pairs to get wrong).
    """
    precision = _ratio(both, same_pred, 1.0)
    recall = _ratio(both, same_gt, 1.0)
    return 1.0 - _ratio(2 * precision * recall, precision + recall, 0.0)


def rand_error(gt: np.ndarray, pred: np.ndarray) -> float:
    """ISBI 2012 Rand error of one image: 1 - foreground-restricted Rand F-score."""
    return rand_error_from_counts(*rand_counts(match(gt, pred)))


def pixel_error(gt: np.ndarray, pred: np.ndarray) -> float:
    """Fraction of pixels where ground truth and prediction disagree on cell vs background."""
    gt, pred = _check_pair(gt, pred)
    return _ratio(np.count_nonzero((gt > 0) != (pred > 0)), gt.size, 0.0)


def separated_foreground(labels: np.ndarray) -> np.ndarray:
    """Cell pixels minus a band where two different cells (nearly) touch.

    The warping error works on binary images; this keeps touching cells as separate
    8-connected components, so merging them is a topological change. Every cell pixel
    with another cell within 2 pixels (5x5 window) becomes background, on both sides, so
    the band is 3-4 pixels wide and a contact line that moves by up to 2 pixels is still
    a plain deformation (the greedy warp cannot move a band further than its width).
    """
    labels = np.asarray(labels)
    highest = ndi.maximum_filter(labels, size=5, mode="constant")
    nonzero = np.where(labels > 0, labels, np.iinfo(np.int64).max).astype(np.int64)
    lowest = ndi.minimum_filter(nonzero, size=5, mode="constant", cval=np.iinfo(np.int64).max)
    return (labels > 0) & (highest <= labels) & (lowest >= labels)


def _simple_point_table() -> np.ndarray:
    """For each of the 256 neighbourhoods of a pixel: is it simple for (8, 4) topology?

    A pixel is simple when flipping it changes neither the 8-connected foreground nor the
    4-connected background components: exactly one 8-component of foreground among its
    8 neighbours and exactly one 4-component of background touching its 4 edge neighbours.
    """
    table = np.zeros(256, dtype=bool)
    eight = np.ones((3, 3), dtype=bool)
    edge = (np.array([0, 1, 1, 2]), np.array([1, 0, 2, 1]))
    for code in range(256):
        patch = np.zeros((3, 3), dtype=bool)
        patch[_NEIGHBOUR_OFFSETS[:, 0] + 1, _NEIGHBOUR_OFFSETS[:, 1] + 1] = [
            (code >> bit) & 1 for bit in range(8)
        ]
        _, n_foreground = ndi.label(patch, structure=eight)
        background = ~patch
        background[1, 1] = False
        bg_labels, _ = ndi.label(background)  # 4-connectivity
        touching = np.unique(bg_labels[edge])
        table[code] = n_foreground == 1 and len(touching[touching > 0]) == 1
    return table


_NEIGHBOUR_OFFSETS = np.array(
    [(-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1)]
)
_SIMPLE = _simple_point_table()


def _neighbour_codes(padded: np.ndarray, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    """8-bit code of the 8 neighbours of each pixel of ``padded[y0:y1, x0:x1]``.

    ``padded`` has a one-pixel background frame, so every window pixel has 8 neighbours.
    """
    code = np.zeros((y1 - y0, x1 - x0), dtype=np.uint8)
    for bit, (dy, dx) in enumerate(_NEIGHBOUR_OFFSETS):
        code |= padded[y0 + dy : y1 + dy, x0 + dx : x1 + dx].astype(np.uint8) << bit
    return code


def _flip_simple(warped: np.ndarray, target: np.ndarray, remove: bool) -> int:
    """One sweep: flip every simple pixel that should go to bg (``remove``) or to fg.

    Pixels of one parity class (y % 2, x % 2) are never neighbours, so a class flips at
    once with the same result as one by one. Returns the number of flipped pixels.
    """
    flipped = 0
    for parity in ((0, 0), (0, 1), (1, 0), (1, 1)):
        wrong = (warped & ~target) if remove else (~warped & target)
        ys, xs = np.nonzero(wrong)
        if len(ys) == 0:
            break
        # Only the bounding box of the disagreement can change (never the padding frame).
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        flip = _SIMPLE[_neighbour_codes(warped, y0, y1, x0, x1)] & wrong[y0:y1, x0:x1]
        on_grid = np.zeros_like(flip)
        on_grid[(parity[0] - y0) % 2 :: 2, (parity[1] - x0) % 2 :: 2] = True
        flip &= on_grid
        box = warped[y0:y1, x0:x1]
        box[flip] = not remove
        flipped += int(np.count_nonzero(flip))
    return flipped


def warp_toward(
    reference: np.ndarray, target: np.ndarray, max_sweeps: int = WARP_MAX_SWEEPS
) -> np.ndarray:
    """Greedy topology-preserving warp of binary 2D ``reference`` toward binary ``target``.

    Flips only simple pixels where the two disagree, removals before additions: a
    contact line that moved is first widened to its new place, then closed at the old
    one (adding first can join two cells through the old line and get stuck). Stops when
    no disagreeing pixel is simple or after ``max_sweeps`` sweeps. Jain et al. 2010 order
    the flips by the prediction's probability; for a binary prediction every flip lowers
    the disagreement by one, so this simpler order is used. Outside the image is background.
    """
    warped = np.pad(np.asarray(reference, dtype=bool), 1)
    target = np.pad(np.asarray(target, dtype=bool), 1)
    sweeps = 0
    while sweeps < max_sweeps:
        changed = 0
        for remove in (True, False):
            while sweeps < max_sweeps:
                sweeps += 1
                flipped = _flip_simple(warped, target, remove)
                changed += flipped
                if not flipped:
                    break
        if not changed:
            break
    return warped[1:-1, 1:-1]


def warping_counts(gt: np.ndarray, pred: np.ndarray) -> int:
    """Pixels still wrong after warping the ground truth's topology onto the prediction (2D)."""
    reference, target = separated_foreground(gt), separated_foreground(pred)
    return int(np.count_nonzero(warp_toward(reference, target) != target))


def warping_error(gt: np.ndarray, pred: np.ndarray) -> float:
    """ISBI 2012 warping error of one 2D image pair, as a fraction of the pixels.

    Following Jain et al. 2010, the ground truth is warped (simple-point flips only, so
    its topology is kept) as close as possible to the prediction; what remains are the
    topological errors: splits, merges, missing and extra objects, holes. Both label
    images are binarised with one-pixel lines between touching cells.
    """
    gt, pred = _check_pair(gt, pred)
    if gt.ndim != 2:
        raise InputError(f"the warping error is defined for 2D images; got shape {gt.shape}")
    return _ratio(warping_counts(gt, pred), gt.size, 0.0)


# --- whole evaluation (stacks slice by slice) ----------------------------------------------


# Progress event of ``evaluate_iter``: ``done`` of ``total`` slices scored.
SliceDone = Done


@dataclass(frozen=True)
class ErrorObject:
    """One object to look at: ``kind`` is a key of ``Evaluation.error_labels``."""

    kind: str
    label: int
    slice: int | None  # None for a 2D image
    centroid: tuple[float, ...]  # (y, x) pixel coordinates within the slice


@dataclass(frozen=True)
class Evaluation:
    """Result of ``evaluate_iter``: the numbers and the offending objects.

    ``error_labels`` maps "false positives", "false negatives", "splits", "merges" to
    label images of the input's shape holding only those objects (false negatives and
    splits as ground-truth objects; false positives and merges as predicted objects).
    """

    metrics: dict[str, float]
    thresholds: tuple[float, ...]
    ap: tuple[float, ...]
    error_labels: dict[str, np.ndarray] = field(repr=False)
    errors: tuple[ErrorObject, ...] = field(repr=False)


ERROR_KINDS = ("false negatives", "false positives", "splits", "merges")


def _select_slices(gt: np.ndarray, slices: Sequence[int] | None) -> list[int | None]:
    if gt.ndim == 2:
        return [None]
    if gt.ndim != 3:
        raise InputError(f"expected labels (Y, X) or (Z, Y, X); got shape {gt.shape}")
    if slices is None:
        annotated = np.flatnonzero(gt.reshape(len(gt), -1).any(axis=1))
        if len(annotated) == 0:
            raise InputError(
                "the ground truth has no annotated slice (all zero): annotate cells first"
            )
        return [int(z) for z in annotated]
    chosen = [int(z) for z in slices]
    for z in chosen:
        if not 0 <= z < len(gt):
            raise InputError(f"slice {z} is outside the stack of {len(gt)} slices")
    return chosen


def evaluate_iter(
    gt: np.ndarray,
    pred: np.ndarray,
    thresholds: Sequence[float] = IOU_THRESHOLDS,
    slices: Sequence[int] | None = None,
    warping: bool = True,
    volume: bool = False,
) -> Generator[SliceDone, None, Evaluation]:
    """Score a prediction against ground truth, yielding one ``SliceDone`` per slice.

    2D images are one slice. For stacks (Z, Y, X) each slice is matched on its own and
    the counts are pooled (TP, FP, FN, pixel pairs, pixels); ``slices`` defaults to the
    annotated ones (ground truth not all zero). Precision, recall, F1, mean matched IoU
    and the error layers use IoU >= ``MATCH_THRESHOLD``. ``warping=False`` skips the
    slowest measure (reported as NaN). ``volume=True`` (Z stacks, not time-lapses) adds
    `objects_3d` of the scored slices: each object is then one 3D object.
    """
    gt, pred = _check_pair(gt, pred)
    chosen = _select_slices(gt, slices)
    thresholds = tuple(float(t) for t in thresholds)
    tp = np.zeros(len(thresholds), dtype=np.int64)
    n_gt = n_pred = splits = merges = wrong_pixels = warp_pixels = pixels = 0
    fg_both = fg_either = 0
    matched_iou: list[np.ndarray] = []
    rand = np.zeros(3, dtype=np.int64)
    error_labels = {kind: np.zeros_like(gt) for kind in ERROR_KINDS}
    errors: list[ErrorObject] = []
    for done, z in enumerate(chosen, start=1):
        g, p = (gt, pred) if z is None else (gt[z], pred[z])
        m = match(g, p)
        n_gt, n_pred = n_gt + len(m.gt_ids), n_pred + len(m.pred_ids)
        tp += [len(m.matched(t)) for t in thresholds]
        hits = m.matched(MATCH_THRESHOLD)
        matched_iou.append(m.iou[hits])
        split_gt, merge_pred = split_merge(m)
        splits, merges = splits + len(split_gt), merges + len(merge_pred)
        rand += rand_counts(m)
        g_fg, p_fg = g > 0, p > 0
        wrong_pixels += np.count_nonzero(g_fg != p_fg)
        fg_both += np.count_nonzero(g_fg & p_fg)
        fg_either += np.count_nonzero(g_fg | p_fg)
        pixels += g.size
        if warping:
            warp_pixels += warping_counts(g, p)
        split_fragments = m.pair_pred[
            np.isin(m.pair_gt, split_gt) & (m.intersection / m.pred_areas[m.pair_pred] > MAJORITY)
        ]
        offenders = {
            "false negatives": (g, np.setdiff1d(m.gt_ids, m.gt_ids[m.pair_gt[hits]])),
            "false positives": (p, np.setdiff1d(m.pred_ids, m.pred_ids[m.pair_pred[hits]])),
            "splits": (p, m.pred_ids[np.unique(split_fragments)]),
            "merges": (p, m.pred_ids[merge_pred]),
        }
        for kind, (source, ids) in offenders.items():
            layer = error_labels[kind] if z is None else error_labels[kind][z]
            keep = np.isin(source, ids)
            layer[keep] = source[keep]
            centroids = ndi.center_of_mass(keep, source, ids) if len(ids) else []
            errors += [
                ErrorObject(kind, int(i), z, tuple(float(c) for c in centre))
                for i, centre in zip(ids, centroids, strict=True)
            ]
        yield SliceDone(done, len(chosen))

    empty = 1.0 if n_gt + n_pred == 0 else 0.0
    ap = tuple(_ratio(k, n_gt + n_pred - k, 1.0) for k in tp)
    all_iou = np.concatenate(matched_iou)
    k = len(all_iou)
    precision, recall = _ratio(k, n_pred, empty), _ratio(k, n_gt, empty)
    metrics: dict[str, float] = {f"ap@{t:.2f}": a for t, a in zip(thresholds, ap, strict=True)}
    metrics |= {
        "mean_ap": float(np.mean(ap)) if ap else float("nan"),
        "precision": precision,
        "recall": recall,
        "f1": _ratio(2 * precision * recall, precision + recall, empty),
        "mean_matched_iou": float(all_iou.mean()) if k else empty,
        "foreground_iou": _ratio(fg_both, fg_either, 1.0),
        "pixel_error": _ratio(wrong_pixels, pixels, 0.0),
        "rand_error": rand_error_from_counts(*(int(v) for v in rand)),
        "warping_error": _ratio(warp_pixels, pixels, 0.0) if warping else float("nan"),
        "tp": k,
        "fp": n_pred - k,
        "fn": n_gt - k,
        "n_gt": n_gt,
        "n_pred": n_pred,
        "splits": splits,
        "merges": merges,
        "slices": len(chosen),
    }
    if volume and gt.ndim == 3:
        metrics |= objects_3d(gt[chosen], pred[chosen])
    return Evaluation(metrics, thresholds, ap, error_labels, tuple(errors))


def objects_3d(gt: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """Scores of a Z stack's 3D objects, each matched over the whole stack at IoU >= 0.5:
    AP, TP/FP/FN and 3D splits/merges (`split_merge`), keys ending in ``_3d``."""
    gt, pred = _check_pair(gt, pred)
    m = match(gt, pred)
    k = len(m.matched(MATCH_THRESHOLD))
    n_gt, n_pred = len(m.gt_ids), len(m.pred_ids)
    splits, merges = split_merge(m)
    return {
        f"ap@{MATCH_THRESHOLD:.2f}_3d": _ratio(k, n_gt + n_pred - k, 1.0),
        "tp_3d": k,
        "fp_3d": n_pred - k,
        "fn_3d": n_gt - k,
        "n_gt_3d": n_gt,
        "n_pred_3d": n_pred,
        "splits_3d": len(splits),
        "merges_3d": len(merges),
    }


def evaluate(gt: np.ndarray, pred: np.ndarray, *args: Any, **kwargs: Any) -> dict[str, float]:
    """All metrics as a flat dict (``evaluate_iter``, same arguments, without progress or
    error layers)."""
    return run_to_end(evaluate_iter(gt, pred, *args, **kwargs)).metrics


# What each number means, for the dock's table and the command line.
DESCRIPTIONS: dict[str, str] = {
    "ap@": "TP / (TP + FP + FN) with matches at IoU >= threshold (1 = perfect)",
    "mean_ap": "AP averaged over the IoU thresholds",
    "precision": "matched predicted objects / predicted objects (IoU >= 0.5)",
    "recall": "matched ground-truth objects / ground-truth objects (IoU >= 0.5)",
    "f1": "harmonic mean of precision and recall",
    "mean_matched_iou": "mean IoU of the matched pairs: how well matched outlines fit",
    "foreground_iou": "IoU of cell vs background, ignoring instances",
    "pixel_error": "fraction of pixels with the wrong class (cell / background), ISBI 2012",
    "rand_error": "1 - Rand F-score of pixel pairs in ground-truth cells, ISBI 2012",
    "warping_error": "fraction of pixels in topological errors after warping, ISBI 2012",
    "tp": "matched objects (IoU >= 0.5)",
    "fp": "predicted objects without a match",
    "fn": "ground-truth objects without a match",
    "n_gt": "ground-truth objects (counted per slice)",
    "n_pred": "predicted objects (counted per slice)",
    "splits": "ground-truth cells cut into 2+ predicted objects",
    "merges": "predicted objects covering 2+ ground-truth cells",
    "slices": "slices scored",
    "ap@0.50_3d": "AP@0.5 of 3D objects (a Z stack's objects matched over all slices)",
    "tp_3d": "matched 3D objects (IoU >= 0.5)",
    "fp_3d": "predicted 3D objects without a match",
    "fn_3d": "ground-truth 3D objects without a match",
    "n_gt_3d": "ground-truth 3D objects",
    "n_pred_3d": "predicted 3D objects",
    "splits_3d": "ground-truth 3D objects cut into 2+ predicted ones (e.g. along Z)",
    "merges_3d": "predicted 3D objects covering 2+ ground-truth ones",
}


def describe(key: str) -> str:
    """The one-line meaning of a metric key of ``evaluate``."""
    return DESCRIPTIONS.get(key, DESCRIPTIONS["ap@"] if key.startswith("ap@") else "")


def format_value(value: float) -> str:
    """Counts as integers, measures with four decimals."""
    return str(value) if isinstance(value, int | np.integer) else f"{value:.4f}"


def format_table(result: dict[str, float]) -> str:
    """A plain-text table of ``evaluate``'s metrics: name, value, meaning."""
    width = max(len(key) for key in result)
    return "\n".join(
        f"{key:<{width}}  {format_value(value):>8}  {describe(key)}"
        for key, value in result.items()
    )


def error_box(evaluation: Evaluation, error: ErrorObject) -> tuple[int, int, int, int]:
    """Pixel bounding box (y0, x0, y1, x1) of an error object, ends exclusive."""
    labels = evaluation.error_labels[error.kind]
    plane = labels if error.slice is None else labels[error.slice]
    ys, xs = np.nonzero(plane == error.label)
    if ys.size == 0:  # cannot happen for an error the evaluation listed; be safe
        y, x = (int(round(c)) for c in error.centroid)
        return y, x, y + 1, x + 1
    return int(ys.min()), int(xs.min()), int(ys.max()) + 1, int(xs.max()) + 1
