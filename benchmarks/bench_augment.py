"""Augmentation cost per training tile vs one U-Net training step on the same device.

Augments image + labels + weight map with every augmentation on (paper defaults), and
times one SGD step (forward, weighted cross entropy, backward, update; batch 1 as in
the paper) of the device's default model. Target: augmentation < 10% of a step.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from napari_unet.core import model, presets
from napari_unet.core.augment import AugmentConfig, augment
from napari_unet.core.device import autocast, memory_format, resolve_device
from napari_unet.core.synthetic import touching_cells


def timed(function, device: torch.device, repeats: int) -> float:
    """Median wall time of ``function()`` in seconds, after one warm-up call."""
    function()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        function()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=presets.AUTO)
    parser.add_argument("--preset", default=None, help="model preset (default: by device)")
    parser.add_argument("--tile", type=int, default=None, help="input tile, px (default 252)")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    device = resolve_device(args.device)
    preset = args.preset or presets.default_preset(device)
    net = model.build(preset).to(device, memory_format=memory_format(device))
    depth = net.config["depth"]
    tile = model.nearest_valid_input_size(args.tile or 252, depth)
    out = net.output_size(tile)
    print(f"device {device}, torch threads {torch.get_num_threads()}")
    print(f"model '{preset}' {net.config}, input tile {tile} px -> output {out} px")

    image, labels = touching_cells((tile, tile), seed=0)
    image_t = torch.from_numpy(image)[None, None].to(device)
    labels_t = torch.from_numpy(labels.astype(np.int64))[None].to(device)
    weights_t = torch.ones(1, tile, tile, device=device)

    optimizer = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.99)
    crop = (tile - out) // 2
    target = (labels_t[:, crop : crop + out, crop : crop + out] > 0).long()
    pixel_weights = weights_t[:, crop : crop + out, crop : crop + out]
    x = image_t.contiguous(memory_format=memory_format(device))

    def train_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast(device):
            logits = net(x)
        loss = torch.nn.functional.cross_entropy(logits.float(), target, reduction="none")
        (loss * pixel_weights).mean().backward()
        optimizer.step()

    net.train()
    step_s = timed(train_step, device, args.repeats)
    print(f"training step (batch 1): {step_s * 1e3:9.2f} ms")

    config = AugmentConfig()
    generator = torch.Generator().manual_seed(0)
    for batch in args.batch:
        batch_image = image_t.repeat(batch, 1, 1, 1)
        batch_labels = labels_t.repeat(batch, 1, 1)
        batch_weights = weights_t.repeat(batch, 1, 1)

        def run(im=batch_image, lab=batch_labels, w=batch_weights) -> None:
            augment(im, lab, w, config, generator)

        per_tile = timed(run, device, args.repeats) / batch
        print(
            f"augmentation, batch {batch:3d}: {per_tile * 1e3:9.2f} ms per tile "
            f"= {100 * per_tile / step_s:5.1f}% of a training step (target < 10%)"
        )


if __name__ == "__main__":
    main()
