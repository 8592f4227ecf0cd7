"""Training speed: steps/s and output Mpx/s of the light and paper models, and the share
of a full training step (sampling, augmentation, forward, backward, update) spent in the
bare forward + backward + update on the same tiles (target >= 0.85).

    .venv/bin/python benchmarks/bench_train.py [--device cpu|cuda] [--steps 20] [--paper-tile 572]

On CUDA it also compares bf16 autocast with fp32 and torch.compile with eager. Weight
maps are computed once per annotation, not per step; their one-time cost is printed.
On CPU, times are process CPU seconds divided by the thread count, so other processes
sharing the cores distort them less than wall-clock times.
Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import time

import torch

from napari_unet.core.augment import AugmentConfig
from napari_unet.core.data import TrainingData
from napari_unet.core.device import autocast, memory_format, resolve_device, use_all_cpu_cores
from napari_unet.core.model import UNet
from napari_unet.core.presets import AUTO, MODEL_PRESETS, TRAINING_PRESETS
from napari_unet.core.synthetic import touching_cells
from napari_unet.core.train import (
    Step,
    TrainConfig,
    train,
    weighted_cross_entropy,
)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _clock(device: torch.device):
    """CPU time on CPU (robust to other processes sharing the cores), wall time on GPUs."""
    return time.process_time if device.type == "cpu" else time.perf_counter


def full_step_seconds(data, preset, tile, batch, steps, device, compile_=False) -> float:
    """Fastest seconds per step of `train.train` (sampling + augmentation + update)."""
    net = UNet(**MODEL_PRESETS[preset])
    config = TrainConfig(
        steps=steps + 3,
        tile_size=tile,
        batch_size=batch,
        device=str(device),
        augment=AugmentConfig(),
        compile=compile_,
        validate_every=10**9,
    )
    times, last = [], None
    for event in train(data, config, net=net):
        if isinstance(event, Step):
            _sync(device)
            now = _clock(device)()
            if last is not None and event.step > 3:  # skip warm-up steps
                times.append(now - last)
            last = now
    return min(times)  # the least disturbed step: other processes only ever add time


def bare_step_seconds(preset, tile, batch, steps, device, bf16=True, compile_=False) -> float:
    """Fastest seconds of forward + weighted loss + backward + AdamW update on fixed tiles."""
    net = UNet(**MODEL_PRESETS[preset]).to(device, memory_format=memory_format(device)).train()
    model = torch.compile(net) if compile_ else net
    in_size = net.nearest_input_size(tile)
    out = net.output_size(in_size)
    x = torch.rand(batch, 1, in_size, in_size, device=device)
    x = x.contiguous(memory_format=memory_format(device))
    target = torch.randint(0, 2, (batch, out, out), device=device)
    weights = torch.rand(batch, out, out, device=device)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4)
    context = autocast(device) if bf16 else contextlib.nullcontext()
    times = []
    for i in range(steps + 3):
        _sync(device)
        start = _clock(device)()
        with context:
            logits = model(x)
        loss = weighted_cross_entropy(logits, target, weights)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        float(loss.detach())  # the training loop reads the loss every step too
        _sync(device)
        if i >= 3:
            times.append(_clock(device)() - start)
    return min(times)  # the least disturbed step: other processes only ever add time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=AUTO)
    parser.add_argument("--steps", type=int, default=12, help="timed steps per measurement")
    parser.add_argument("--paper-tile", type=int, default=None, help="paper input tile (572)")
    parser.add_argument("--presets", default=",".join(MODEL_PRESETS))
    args = parser.parse_args()
    device = resolve_device(args.device)
    if device.type == "cpu":
        print(f"CPU threads: {use_all_cpu_cores()}")

    image, labels = touching_cells((512, 512), seed=0)
    start = time.perf_counter()
    data = TrainingData.from_arrays(image, labels, validation_fraction=0)
    print(
        f"targets + weight maps of a 512x512 annotation (once): {time.perf_counter() - start:.2f} s"
    )

    for preset in args.presets.split(","):
        defaults = TRAINING_PRESETS[preset]
        tile = (
            args.paper_tile if (preset == "paper" and args.paper_tile) else defaults["tile_size"]
        )
        batch = defaults["batch_size"] if device.type == "cuda" else 1
        net = UNet(**MODEL_PRESETS[preset])
        in_size = net.nearest_input_size(tile)
        out = net.output_size(in_size)
        steps = (
            args.steps if preset == "light" or device.type == "cuda" else max(3, args.steps // 4)
        )
        full = full_step_seconds(data, preset, tile, batch, steps, device)
        bare = bare_step_seconds(preset, tile, batch, steps, device)
        if device.type == "cpu":  # CPU seconds -> wall seconds with every core busy
            full, bare = full / torch.get_num_threads(), bare / torch.get_num_threads()
        mpx = batch * out * out / full / 1e6
        print(
            f"{preset:5s} {in_size}->{out} px x{batch}: {1 / full:6.2f} steps/s, "
            f"{mpx:6.3f} output Mpx/s; bare fwd+bwd {bare * 1000:7.1f} ms, full step "
            f"{full * 1000:7.1f} ms, ratio bare/full = {bare / full:.2f} (target >= 0.85)"
        )
        if device.type == "cuda":
            fp32 = bare_step_seconds(preset, tile, batch, steps, device, bf16=False)
            compiled = bare_step_seconds(preset, tile, batch, steps, device, compile_=True)
            print(
                f"      bf16 vs fp32: {fp32 / bare:.2f}x faster; compiled vs eager (bf16): "
                f"{bare / compiled:.2f}x faster"
            )


if __name__ == "__main__":
    main()
