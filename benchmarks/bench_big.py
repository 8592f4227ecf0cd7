"""Big images and many images: peak memory vs image size, --workers speed-up, folder throughput.

memory:  `napari-unet predict` on synthetic tiled TIFFs of 2k..16k px a side, each in a
         fresh process; prints its peak resident memory (ru_maxrss) and time. ``--model
         tiny`` (base 2, depth 4: the light model's halo and pooling grid, 1/8 of its
         channels, weights set to threshold the intensity so the labelling sees real
         cells) measures the chunking machinery's memory where the light model would
         take too long on a shared 2-core machine.
workers: one 2D image end to end in one process vs ``--workers 2``, and the bare forward
         passes (`tiling.predict_tiled`, no labelling, no I/O) of the same image.
folder:  200 small images as a folder vs one image of the same total pixels (one process).
Prints one JSON line per measurement.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from napari_unet.core import checkpoint, io
from napari_unet.core.synthetic import touching_cells

BLOCK_PX = 1024  # the synthetic big image repeats a few different 1024^2 blocks


def _model(kind: str, folder: Path) -> str:
    from napari_unet.models import starter_model_path

    if kind == "light":
        return str(starter_model_path())
    import torch

    from napari_unet.core.model import UNet

    # A known function (foreground = normalised intensity > 0.5) so the labelling sees
    # real cells: only the top level's identity path and the head are non-zero.
    net = UNet(base_channels=2, depth=4, dropout=0.0)
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
        for conv in (net.down[0][0], net.down[0][2], net.up[-1][0], net.up[-1][2]):
            conv.weight[0, 0, 1, 1] = 1.0
        net.head.weight[1, 0, 0, 0] = 40.0
        net.head.bias[1] = -20.0
    return str(checkpoint.save(folder / "tiny.safetensors", net))


def write_big_tiff(path: Path, size: int) -> Path:
    """A size x size uint16 tiled TIFF written block by block (never whole in memory)."""
    import tifffile

    blocks = [
        (touching_cells((BLOCK_PX, BLOCK_PX), seed=s)[0] * 1000).astype(np.uint16)
        for s in range(3)
    ]
    n = math.ceil(size / BLOCK_PX)

    def tiles():
        for i in range(n * n):
            yield blocks[i % len(blocks)]

    tifffile.imwrite(path, tiles(), shape=(size, size), dtype=np.uint16, tile=(BLOCK_PX,) * 2)
    return path


def run_cli(args: list[str], env: dict | None = None) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB) of one `napari-unet` run in a fresh process."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "napari_unet._cli", *args],
        stderr=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"napari-unet {' '.join(args)} failed")
    return time.perf_counter() - start, usage.ru_maxrss / 1024


def bench_memory(sizes: list[int], kind: str, tmp: Path) -> None:
    model = _model(kind, tmp)
    for size in sizes:
        image = write_big_tiff(tmp / f"big{size}.tif", size)
        seconds, rss = run_cli(
            ["predict", model, str(image), "-o", str(tmp / "labels.tif"), "--device", "cpu"]
        )
        print(
            json.dumps(
                {
                    "bench": "memory",
                    "model": kind,
                    "size_px": size,
                    "megapixels": round(size * size / 1e6, 1),
                    "peak_rss_mb": round(rss),
                    "seconds": round(seconds, 1),
                }
            ),
            flush=True,
        )
        image.unlink()


def bench_workers(size: int, kind: str, tmp: Path, chunk: int) -> None:
    from napari_unet.core import tiling
    from napari_unet.core.normalize import normalize

    model = _model(kind, tmp)
    image = write_big_tiff(tmp / "img.tif", size)
    base = ["predict", model, str(image), "--device", "cpu", "--chunk-size", str(chunk), "-o"]
    one, _ = run_cli([*base, str(tmp / "one.ome.zarr")])
    two, _ = run_cli([*base, str(tmp / "two.ome.zarr"), "--workers", "2"])
    from napari_unet.core import bigio

    a = np.asarray(bigio.open_image(tmp / "one.ome.zarr")[:])
    b = np.asarray(bigio.open_image(tmp / "two.ome.zarr")[:])
    net, _ = checkpoint.load(model)
    x = normalize(io.read(image))
    start = time.perf_counter()
    tiling.predict_tiled(net, x, device="cpu")
    bare = time.perf_counter() - start
    print(
        json.dumps(
            {
                "bench": "workers",
                "model": kind,
                "size_px": size,
                "chunk_px": chunk,
                "one_process_s": round(one, 1),
                "workers2_s": round(two, 1),
                "speedup": round(one / two, 2),
                "bare_forward_s": round(bare, 1),
                "end_to_end_over_bare": round(one / bare, 2),
                "identical_labels": bool(np.array_equal(a, b)),
            }
        ),
        flush=True,
    )


def bench_folder(n: int, side: int, kind: str, tmp: Path) -> None:
    model = _model(kind, tmp)
    folder = tmp / "plate"
    tiles = [(touching_cells((side, side), seed=s)[0] * 1000).astype(np.uint16) for s in range(n)]
    for i, tile in enumerate(tiles):
        io.write(folder / f"img_{i:03d}.tif", tile)
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    mosaic = np.zeros((rows * side, cols * side), np.uint16)
    for i, tile in enumerate(tiles):
        mosaic[
            (i // cols) * side : (i // cols + 1) * side, (i % cols) * side : (i % cols + 1) * side
        ] = tile
    # The same total pixels as one image (the mosaic's empty cells are cropped off by area).
    height = math.ceil(n * side * side / mosaic.shape[1])
    io.write(tmp / "one.tif", mosaic[:height])
    many, _ = run_cli(["predict", model, str(folder), "-o", str(tmp / "out"), "--device", "cpu"])
    one, _ = run_cli(
        [
            "predict",
            model,
            str(tmp / "one.tif"),
            "-o",
            str(tmp / "one_labels.tif"),
            "--device",
            "cpu",
        ]
    )
    print(
        json.dumps(
            {
                "bench": "folder",
                "model": kind,
                "images": n,
                "side_px": side,
                "folder_s": round(many, 1),
                "one_image_s": round(one, 1),
                "throughput_ratio": round(one / many, 2),
            }
        ),
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("memory", "workers", "folder"))
    parser.add_argument("--model", choices=("light", "tiny"), default="light")
    parser.add_argument("--sizes", default="2048,4096,8192,16384", help="memory: image sides")
    parser.add_argument("--size", type=int, default=2048, help="workers: image side")
    parser.add_argument("--chunk", type=int, default=1024, help="workers: chunk side")
    parser.add_argument("--images", type=int, default=200, help="folder: how many")
    parser.add_argument("--side", type=int, default=256, help="folder: image side")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.what == "memory":
            bench_memory([int(s) for s in args.sizes.split(",")], args.model, tmp)
        elif args.what == "workers":
            bench_workers(args.size, args.model, tmp, args.chunk)
        else:
            bench_folder(args.images, args.side, args.model, tmp)


if __name__ == "__main__":
    main()
