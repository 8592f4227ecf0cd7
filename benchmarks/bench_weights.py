"""Border weight term: bounded-box distance transforms vs the brute force (one per cell).

Prints times and speed-ups on synthetic touching cells of 512², 1024² and 2048². The
brute force costs one full-image distance transform per cell; above 512² it is timed
on a subset of cells and extrapolated linearly (its cost is exactly linear in the cell
count), which the output says. ``--full`` times it on every cell instead (minutes).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from scipy import ndimage as ndi

from napari_unet.core import weights
from napari_unet.core.synthetic import touching_cells

SIZES = ((512, 60), (1024, 250), (2048, 1000))  # (side in pixels, cells asked for)
SUBSET = 25  # cells timed for the extrapolated brute force


def brute_force(labels: np.ndarray, cells: list[int], w0: float, sigma: float) -> np.ndarray:
    """Full-image distance transform per cell, keep the two smallest per pixel."""
    d1 = np.full(labels.shape, np.inf)
    d2 = np.full(labels.shape, np.inf)
    for cell in cells:
        d = ndi.distance_transform_edt(labels != cell)
        d2 = np.minimum(d2, np.maximum(d1, d))
        d1 = np.minimum(d1, d)
    term = w0 * np.exp(-((d1 + d2) ** 2) / (2 * sigma**2))
    return np.where(labels == 0, term, 0.0)


def best_of(repeats: int, function, *args) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function(*args)
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="brute force on all cells")
    args = parser.parse_args()
    w0, sigma = weights.W0, weights.SIGMA_PX
    print(f"border term w0={w0} sigma={sigma} px, reach {weights.reach_px(w0, sigma):.1f} px")
    print(f"CPU cores available: {len(os.sched_getaffinity(0))}")
    header = (
        f"{'size':>6} {'cells':>6} {'fast s':>8} {'weight_map s':>13} "
        f"{'brute s':>9} {'speed-up':>9}  note"
    )
    print(header)
    for side, n_cells in SIZES:
        _, labels = touching_cells((side, side), n_cells=n_cells, seed=0)
        cells = [int(c) for c in np.unique(labels) if c]
        fast_s, fast = best_of(3, weights.border_weights, labels, w0, sigma)
        map_s, _ = best_of(3, weights.weight_map, labels, w0, sigma)
        if args.full or side <= 512:
            brute_s, exact = best_of(1, brute_force, labels, cells, w0, sigma)
            error = float(np.abs(fast - exact).max())
            note = f"brute force on all cells; max |fast - brute| = {error:.1e}"
        else:
            subset_s, _ = best_of(1, brute_force, labels, cells[:SUBSET], w0, sigma)
            brute_s = subset_s * len(cells) / SUBSET
            note = f"brute force timed on {SUBSET} cells, extrapolated linearly"
        print(
            f"{side:>5}² {len(cells):>6} {fast_s:>8.3f} {map_s:>13.3f} "
            f"{brute_s:>9.1f} {brute_s / fast_s:>8.0f}x  {note}"
        )


if __name__ == "__main__":
    main()
