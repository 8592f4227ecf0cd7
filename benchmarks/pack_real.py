"""Pack the training part of the shared real data small enough to travel to a GPU machine.

The device tool carries at most 64 MiB with the repository; the shared set is ~95 MB. The
pack keeps what the starter scripts train on, in the layout `_real` reads: the DSB2018
images not held out (colour ones as their gray mean, rounded to 8 bits, which is what
`load_dsb` makes of them), all labels, and the phase-contrast training slices (6-29)
scaled to 8 bits between their 0.1 and 99.9 percentiles (training normalises each image
by its 1-99.8 percentiles, so little is lost); slices 0-5, the benchmarks' images, are
left blank. Held-out images stay behind: scoring runs here, on the CPU.

    python benchmarks/pack_real.py /work/shared/data/real .gpu_data/real
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
import tifffile

from _real import dsb_index, gray
from make_phase_starter import TRAIN_SLICES


def pack(root: Path, out: Path) -> None:
    for kind in ("images", "labels"):
        (out / "dsb2018" / kind).mkdir(parents=True, exist_ok=True)
    shutil.copy(root / "dsb2018" / "index.csv", out / "dsb2018" / "index.csv")
    for entry in dsb_index(root):
        if entry.held_out:
            continue
        for kind in ("images", "labels"):
            a = tifffile.imread(root / "dsb2018" / kind / f"{entry.id}.tif")
            if kind == "images" and a.ndim == 3:
                a = np.round(gray(a)).astype(np.uint8)
            tifffile.imwrite(out / "dsb2018" / kind / f"{entry.id}.tif", a, compression="zlib")
    phase = out / "usiigaci_phase"
    phase.mkdir(exist_ok=True)
    stack = tifffile.imread(root / "usiigaci_phase" / "image.tif").astype(np.float32)
    labels = tifffile.imread(root / "usiigaci_phase" / "labels.tif")
    packed = np.zeros(stack.shape, np.uint8)
    for z in TRAIN_SLICES:
        lo, hi = np.percentile(stack[z], (0.1, 99.9))
        packed[z] = np.clip((stack[z] - lo) / (hi - lo) * 255, 0, 255).round()
    blank = [z for z in range(len(labels)) if z not in TRAIN_SLICES]
    labels[blank] = 0
    tifffile.imwrite(phase / "image.tif", packed, compression="zlib")
    tifffile.imwrite(phase / "labels.tif", labels, compression="zlib")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="the shared real data folder")
    parser.add_argument("out", type=Path, help="the pack (a folder git ignores)")
    args = parser.parse_args()
    pack(args.root, args.out)
