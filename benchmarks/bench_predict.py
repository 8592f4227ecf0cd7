"""Prediction speed and memory: end-to-end Mpx/s vs the bare model forward over the same tiles.

End to end = normalisation, mirror padding, tiling, batching, forward, stitching and
instance labelling (`core.predict`). Bare = only the forward passes over the same tiles
at the same batch size. Target: bare / end-to-end >= 0.85. Peak memory is measured in a
fresh process per image size (2048^2 and 4096^2): it must grow with the image, no faster.
``--postprocess`` instead prints the AP table the post-processing defaults were chosen by.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from napari_unet.core import tiling
from napari_unet.core.device import autocast, memory_format, resolve_device
from napari_unet.core.events import run_to_end as run
from napari_unet.core.model import UNet
from napari_unet.core.predict import PredictConfig, predict_stack
from napari_unet.core.presets import AUTO, LIGHT, MODEL_PRESETS
from napari_unet.core.synthetic import touching_cells

METADATA = {"normalisation": {"percentiles": [1.0, 99.8]}}


def _net(preset: str, device: torch.device) -> UNet:
    """The starter model's weights for the light preset when shipped (realistic labels
    for the post-processing cost), else a seeded random init of the preset."""
    from napari_unet.core import checkpoint
    from napari_unet.models import starter_model_path

    if preset == "light" and starter_model_path().is_file():
        return checkpoint.load(starter_model_path(), device)[0]
    torch.manual_seed(0)
    return UNet(**MODEL_PRESETS[preset]).to(device).eval()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bare_forward_s(net: UNet, shape: tuple[int, ...], tile: int, batch: int, device) -> float:
    """Seconds for only the forward passes over the tiles `tiling` cuts for ``shape``."""
    ly, lx = (tiling.axis_layout(net, n, tile) for n in shape[-2:])
    n_slices = 1 if len(shape) == 2 else shape[0]
    n_tiles = ly.count * lx.count
    sizes = [min(batch, n_tiles - i) for i in range(0, n_tiles, batch)] * n_slices
    x = torch.rand(batch, 1, ly.tile_in, lx.tile_in, device=device)
    x = x.contiguous(memory_format=memory_format(device))
    with torch.inference_mode(), autocast(device):
        net(x[:1])  # warm-up
        _sync(device)
        start = time.perf_counter()
        for b in sizes:
            torch.softmax(net(x[:b]).float(), dim=1)
        _sync(device)
    return time.perf_counter() - start


def end_to_end_s(net, image, config) -> float:
    start = time.perf_counter()
    run(predict_stack(net, METADATA, image, config))
    _sync(resolve_device(config.device))
    return time.perf_counter() - start


def speed(args) -> None:
    device = resolve_device(args.device)
    net = _net(args.preset, device)
    tile, batch = tiling.auto_tile_and_batch(net, device)
    tile, batch = args.tile_size or tile, args.batch_size or batch
    # the pipeline's overhead is measured on one forward per tile (no TTA); TTA's cost,
    # the default's, is then reported as its own ratio on the same image
    config = PredictConfig(tile_size=tile, batch_size=batch, device=str(device), tta=False)
    print(
        f"device {device}, preset {args.preset} ({MODEL_PRESETS[args.preset]}), tile {tile}, batch {batch}"
    )
    cases = {
        "2048x2048": touching_cells((2048, 2048), seed=0)[0],
        "16x512x512": np.stack([touching_cells((512, 512), seed=s)[0] for s in range(16)]),
    }
    for name, image in cases.items():
        # Alternate the two and keep each one's best of `repeats`: other load on the
        # machine then hits both alike.
        ends, bares, ttas = [], [], []
        for _ in range(args.repeats):
            ends.append(end_to_end_s(net, image, config))
            bares.append(bare_forward_s(net, image.shape, tile, batch, device))
            ttas.append(end_to_end_s(net, image, replace(config, tta=True)))
        end, bare, tta = min(ends), min(bares), min(ttas)
        mpx = image.size / 1e6
        print(
            f"{name:>11}: end-to-end {end:6.2f} s = {mpx / end:5.2f} Mpx/s; "
            f"bare forward {bare:6.2f} s; bare/end-to-end = {bare / end:.2f} (target >= 0.85); "
            f"with TTA (the default) {tta:6.2f} s = {tta / end:.1f}x"
        )


def _status_kb(key: str) -> int:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _reset_peak_rss_kb() -> int:
    """Reset the peak-RSS mark (Linux: imports' transient peaks no longer count); returns
    the current RSS in kB."""
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return _status_kb("VmRSS")


def memory_one(path: str, preset: str, tile: int | None) -> dict:
    """Peak memory of one end-to-end prediction (run in a fresh process by `memory`)."""
    net = _net(preset, torch.device("cpu"))
    image = np.load(path)
    size = image.shape[0]
    with torch.inference_mode():  # the model's own first-call allocations are not ours
        net(torch.zeros(1, 1, 188, 188))
    baseline = _reset_peak_rss_kb()
    tracemalloc.start()
    run(predict_stack(net, METADATA, image, PredictConfig(tile_size=tile, device="cpu")))
    _, numpy_peak = tracemalloc.get_traced_memory()
    peak = _status_kb("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "size": size,
        "image_mb": image.nbytes / 1e6,
        "numpy_peak_mb": numpy_peak / 1e6,
        "rss_growth_mb": (peak - baseline) / 1e3,
    }


def memory(args) -> None:
    cells = touching_cells((2048, 2048), seed=1)[0]
    for size in (2048, 4096):
        path = Path(tempfile.mkdtemp()) / f"cells{size}.npy"
        np.save(path, np.tile(cells, (size // 2048, size // 2048)))  # 4096^2: 2x2 copies
        command = [sys.executable, __file__, "--memory-one", str(path), "--preset", args.preset]
        if args.tile_size:
            command += ["--tile-size", str(args.tile_size)]
        out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        print(
            f"{size}^2: image {r['image_mb']:.0f} MB (float32); peak numpy allocations "
            f"{r['numpy_peak_mb']:.0f} MB = {r['numpy_peak_mb'] / r['image_mb']:.1f}x image; "
            f"process RSS growth {r['rss_growth_mb']:.0f} MB"
        )


def postprocess_table() -> None:
    """AP@0.5/0.75/0.9 of `to_instances` settings on synthetic ground truth pushed through
    the training target (binary) and blurred like a network output (soft)."""
    from scipy import ndimage as ndi

    from napari_unet.core.metrics import average_precision
    from napari_unet.core.postprocess import to_instances
    from napari_unet.core.weights import separate_touching

    data = []
    for seed in range(3):
        labels = touching_cells((384, 384), seed=seed)[1]
        target = (separate_touching(labels) > 0).astype(np.float32)
        maps = {"binary": target, "blur 0.7": ndi.gaussian_filter(target, 0.7)}
        maps["blur 1.0"] = ndi.gaussian_filter(target, 1.0)
        data.append((labels, maps))
    print("low_threshold gap_px split | AP@0.5/0.75/0.9: binary, blur 0.7 px, blur 1.0 px")
    for low in (0.5, 0.4, 0.3):
        for gap in (0, 1, 2, 3):
            for split in (False, True):
                cells = []
                for kind in data[0][1]:
                    ap = np.mean(
                        [
                            average_precision(
                                gt,
                                to_instances(
                                    m[kind], low_threshold=low, gap_px=gap, split_merged=split
                                ),
                                (0.5, 0.75, 0.9),
                            )
                            for gt, m in data
                        ],
                        axis=0,
                    )
                    cells.append("/".join(f"{a:.3f}" for a in ap))
                print(f"{low:13} {gap:6} {split!s:5} | " + "  ".join(cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=AUTO)
    parser.add_argument("--preset", default=LIGHT, choices=MODEL_PRESETS)
    parser.add_argument("--tile-size", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=2, help="best of N timings")
    parser.add_argument("--postprocess", action="store_true", help="only the AP table")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--memory-only", action="store_true")
    parser.add_argument("--memory-one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_one:
        print(json.dumps(memory_one(args.memory_one, args.preset, args.tile_size)))
        return
    if args.postprocess:
        postprocess_table()
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    if not args.memory_only:
        speed(args)
    if not args.no_memory:
        memory(args)


if __name__ == "__main__":
    main()
