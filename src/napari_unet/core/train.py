"""The training loop as a generator of progress events (dock, CLI and tests drive it).

Weighted softmax cross entropy (paper eq. 1 with the weight map of eq. 2; weight 0 =
ignored: no loss, no gradient), augmentation on the training device, periodic
validation on the held-out annotation, and the best model by validation IoU kept.
Closing the generator stops at the next step; the best model so far is in the
`TrainResult`. Sampling and targets live in `data.py`, the network in `model.py`.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Generator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from napari_unet.core import checkpoint
from napari_unet.core.augment import AugmentConfig, augment
from napari_unet.core.data import TileSampler, TrainingData, ValidationRegion
from napari_unet.core.device import autocast, memory_format, resolve_device, use_all_cpu_cores
from napari_unet.core.io import InputError
from napari_unet.core.model import PRESETS, UNet, default_preset

# Ronneberger et al. 2015, section 3: SGD with momentum 0.99 (many earlier samples
# steer each update), batch 1 of large tiles.
PAPER_MOMENTUM = 0.99
OPTIMIZERS = ("adamw", "sgd")
DEFAULT_LR = {"adamw": 2e-3, "sgd": 1e-2}
WARMUP_FRACTION = 0.05  # linear warm-up, then cosine decay to FINAL_LR_FRACTION * lr
FINAL_LR_FRACTION = 0.02
VALIDATION_TILE_PX = 256  # output tile side when predicting the hold-out (few, large tiles)

# Per-preset defaults (chosen by benchmarks/bench_train.py and bench_accuracy.py): input
# tile side (pixels), tiles per step and steps. The light model does ~25 steps/s on 2
# free CPU cores, so 5000 steps take ~4-5 minutes; measured against 2500 steps they
# raise AP@0.9 on synthetic cells from 0.89 to 0.92. `max_minutes` keeps a slower or
# busy machine within 10 minutes.
PRESET_TRAINING: dict[str, dict[str, Any]] = {
    "light": {"tile_size": 188, "batch_size": 1, "steps": 5000, "validate_every": 250},
    "paper": {"tile_size": 572, "batch_size": 4, "steps": 3000, "validate_every": 200},
}


@dataclass(frozen=True)
class Step:
    """One optimiser step done (loss = weighted cross entropy of its batch)."""

    step: int
    total: int
    loss: float
    lr: float
    tiles_per_s: float


@dataclass(frozen=True)
class Validation:
    """Metrics on the held-out region; ``preview`` = foreground probability there (float32)."""

    step: int
    loss: float
    iou: float
    ap50: float | None
    preview: np.ndarray | None
    region: tuple[int, int, int, int, int] | None  # (slice_index, y0, x0, y1, x1)
    best: bool  # this model is the best so far (it is the one kept)


@dataclass
class TrainConfig:
    """Training settings; ``None`` means the preset's default (see `PRESET_TRAINING`)."""

    steps: int | None = None
    preset: str | None = None  # new model size; None: by device (ignored when a net is given)
    tile_size: int | None = None  # input tile side in pixels, rounded to a valid size
    batch_size: int | None = None
    lr: float | None = None
    optimizer: str = "adamw"  # or "sgd" (the paper's, momentum 0.99)
    weight_decay: float = 1e-4
    validate_every: int | None = None  # steps; also after the first and the last step
    max_minutes: float | None = None  # stop early after this long (keeps the best)
    device: str = "auto"
    seed: int | None = 0
    augment: AugmentConfig | None = field(default_factory=AugmentConfig)  # None: off
    compile: bool = False  # torch.compile on CUDA (slow first steps, faster after)

    def resolved(self, preset: str) -> TrainConfig:
        """A copy with every ``None`` default filled in from the preset's defaults."""
        defaults = PRESET_TRAINING.get(preset, PRESET_TRAINING["light"])
        out = copy.copy(self)
        for name in ("steps", "tile_size", "batch_size", "validate_every"):
            if getattr(out, name) is None:
                setattr(out, name, defaults[name])
        if out.lr is None:
            out.lr = DEFAULT_LR.get(out.optimizer, 1e-3)
        out.check()
        return out

    def check(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise InputError(f"optimizer must be one of {OPTIMIZERS}; got {self.optimizer!r}")
        for name in ("steps", "tile_size", "batch_size", "validate_every"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise InputError(f"{name} must be at least 1; got {value}")
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
            raise InputError(f"learning rate must be a positive number; got {self.lr}")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise InputError(f"max_minutes must be positive; got {self.max_minutes}")


@dataclass
class TrainResult:
    """Kept up to date while training: the best weights so far and the model's metadata.

    Pass one to `train` to get the best model after stopping early (``best_net()``
    builds a fresh CPU copy; safe to call between events).
    """

    config: dict[str, Any] = field(default_factory=dict)  # architecture (UNet kwargs)
    best_state: dict[str, torch.Tensor] | None = None
    best_step: int = 0
    best_iou: float | None = None
    best_loss: float = math.inf  # validation loss of the best model (tie-breaker)
    steps_done: int = 0
    stopped_early: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)
    net: UNet | None = None  # the trained net with the best weights, once finished

    def best_net(self) -> UNet:
        if self.best_state is None:
            raise InputError("No model yet: training has not finished a step")
        net = UNet(**self.config)
        net.load_state_dict(self.best_state)
        return net.eval()

    def save(self, path: str | Path) -> Path:
        """Write the best model so far with its metadata (atomic)."""
        return checkpoint.save(path, self.best_net(), self.metadata)


def weighted_cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """Sum of per-pixel softmax cross entropy times weight, divided by the sum of weights.

    Pixels of weight 0 add nothing to the loss nor to the gradient.
    """
    per_pixel = F.cross_entropy(logits.float(), target, reduction="none")
    return (per_pixel * weights).sum() / weights.sum().clamp_min(1e-8)


def lr_factor(progress: float) -> float:
    """Learning-rate multiplier for training progress in [0, 1]: warm-up, cosine decay."""
    if progress < WARMUP_FRACTION:
        return max(progress / WARMUP_FRACTION, 0.01)
    t = min(1.0, (progress - WARMUP_FRACTION) / (1.0 - WARMUP_FRACTION))
    return FINAL_LR_FRACTION + (1.0 - FINAL_LR_FRACTION) * 0.5 * (1.0 + math.cos(math.pi * t))


def _initial_net(
    net: UNet | str | Path | None, data: TrainingData, cfg: TrainConfig
) -> tuple[UNet, dict[str, Any]]:
    parent: dict[str, Any] = {}
    if isinstance(net, (str, Path)):
        path = Path(net)
        net, meta = checkpoint.load(path)
        previous = meta.get("training", {})
        parent = {"from": path.name, "from_steps": previous.get("steps_done", 0)}
    elif net is None:
        if cfg.preset not in PRESETS:
            raise InputError(
                f"Unknown model preset {cfg.preset!r}; choose one of {sorted(PRESETS)}"
            )
        if cfg.seed is not None:
            torch.manual_seed(cfg.seed)
        net = UNet(in_channels=data.in_channels, n_classes=data.n_classes, **PRESETS[cfg.preset])
    net = getattr(net, "_orig_mod", net)
    if net.in_channels != data.in_channels:
        raise InputError(
            f"The model takes {net.in_channels} input channel(s) but the image has "
            f"{data.in_channels}; pick a matching model or train a new one"
        )
    if net.n_classes != data.n_classes:
        raise InputError(
            f"The model predicts {net.n_classes} classes but the training data has "
            f"{data.n_classes}; pick a matching model or train a new one"
        )
    return net, parent


def _preset_of(net: UNet) -> str:
    for name, kwargs in PRESETS.items():
        if all(net.config.get(k) == v for k, v in kwargs.items()):
            return name
    return "light" if net.config["base_channels"] < 64 else "paper"


def _tile_sizes(net: UNet, tile_size: int) -> tuple[int, int]:
    """(input, output) tile sides: the valid input size nearest to ``tile_size``."""
    in_size = net.nearest_input_size(tile_size)
    return in_size, net.output_size(in_size)


def _predict_region(
    net: UNet,
    image: np.ndarray,
    region: ValidationRegion,
    device: torch.device,
    batch_size: int,
) -> np.ndarray:
    """Softmax probabilities (K, h, w) on the region of ``image`` (C, Y, X).

    Output tiles abut exactly (valid convs), the image is mirrored at its border.
    """
    height, width = region.y1 - region.y0, region.x1 - region.x0
    smallest = net.nearest_input_size(1)
    context = smallest - net.output_size(smallest)  # the same for every tile size
    size = net.nearest_input_size(min(max(height, width), VALIDATION_TILE_PX) + context)
    out = net.output_size(size)
    ctx = (size - out) // 2
    pad = ctx + out
    padded = np.pad(image, ((0, 0), (pad, pad), (pad, pad)), mode="reflect")
    corners = [(y, x) for y in range(0, height, out) for x in range(0, width, out)]
    probs = np.zeros((net.n_classes, height + out, width + out), dtype=np.float32)
    for start in range(0, len(corners), batch_size):
        chunk = corners[start : start + batch_size]
        tiles = np.stack(
            [
                padded[
                    :,
                    region.y0 + y - ctx + pad : region.y0 + y - ctx + pad + size,
                    region.x0 + x - ctx + pad : region.x0 + x - ctx + pad + size,
                ]
                for y, x in chunk
            ]
        )
        batch = torch.from_numpy(tiles).to(device)
        batch = batch.contiguous(memory_format=memory_format(device))
        with torch.no_grad(), autocast(device):
            p = torch.softmax(net(batch).float(), dim=1).cpu().numpy()
        for (y, x), tile in zip(chunk, p, strict=True):
            probs[:, y : y + out, x : x + out] = tile
    return probs[:, :height, :width]


def _ap50(labels: np.ndarray, probs: np.ndarray, mask: np.ndarray) -> float | None:
    """AP at IoU 0.5 of instances on the held-out region (None without metrics/postprocess)."""
    try:
        from napari_unet.core.metrics import average_precision
        from napari_unet.core.postprocess import to_instances
    except ImportError:
        return None
    predicted = to_instances(probs) * mask
    return float(average_precision(labels * mask, predicted, thresholds=(0.5,))[0])


def _validate(
    net: UNet,
    data: TrainingData,
    device: torch.device,
    batch_size: int,
    step: int,
) -> Validation:
    region = data.validation
    assert region is not None and data.validation_weights is not None
    net.eval()
    probs = _predict_region(net, data.images[region.index], region, device, batch_size)
    net.train()
    rows, cols = slice(region.y0, region.y1), slice(region.x0, region.x1)
    target = data.targets[region.index, rows, cols]
    weights = data.validation_weights
    eps = 1e-7
    picked = np.take_along_axis(probs, target[None].astype(np.int64), axis=0)[0]
    loss = float((-np.log(picked + eps) * weights).sum() / max(weights.sum(), eps))
    predicted, actual = probs[1] > 0.5, target == 1
    inter = np.count_nonzero(predicted & actual & region.mask)
    union = np.count_nonzero((predicted | actual) & region.mask)
    iou = inter / union if union else 1.0
    ap50 = _ap50(data.labels[region.index, rows, cols], probs, region.mask)
    return Validation(
        step=step,
        loss=loss,
        iou=float(iou),
        ap50=ap50,
        preview=probs[1],
        region=(region.slice_index, region.y0, region.x0, region.y1, region.x1),
        best=False,
    )


def _optimizer(net: UNet, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=PAPER_MOMENTUM)
    return torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


class _Tiles:
    """The tile sampler and batch size, which shrink when the GPU runs out of memory."""

    def __init__(
        self, data: TrainingData, net: UNet, tile_size: int, batch_size: int, seed: int | None
    ) -> None:
        self.data, self.net, self.seed = data, net, seed
        self.batch_size = batch_size
        self.sampler = self._sampler(tile_size)

    def _sampler(self, tile_size: int) -> TileSampler:
        in_size, out_size = _tile_sizes(self.net, tile_size)
        return TileSampler(self.data, in_size, out_size, seed=self.seed)

    def shrink(self) -> bool:
        """Halve the batch, else make the tile ~3/4 as large; False when nothing is left."""
        if self.batch_size > 1:
            self.batch_size //= 2
            return True
        smaller = self.net.nearest_input_size(int(self.sampler.in_size * 0.75))
        if smaller >= self.sampler.in_size:
            return False
        self.sampler = self._sampler(smaller)
        return True


MAX_OUT_OF_MEMORY_RETRIES = 6
_OUT_OF_MEMORY = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


def _optimise(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    tiles: _Tiles,
    augment_config: AugmentConfig | None,
    generator: torch.Generator,
    device: torch.device,
) -> torch.Tensor:
    """One step: sample, augment (on ``device``), forward, weighted loss, backward, update."""
    images, targets, weights = (
        torch.from_numpy(a).to(device, non_blocking=True)
        for a in tiles.sampler.sample(tiles.batch_size)
    )
    if augment_config is not None:
        images, targets, weights = augment(images, targets, weights, augment_config, generator)
    ctx, out = tiles.sampler.context, tiles.sampler.out_size
    crop = (slice(None), slice(ctx, ctx + out), slice(ctx, ctx + out))
    images = images.contiguous(memory_format=memory_format(device))
    with autocast(device):
        logits = model(images)
    loss = weighted_cross_entropy(logits, targets[crop], weights[crop])
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss


def train(
    data: TrainingData,
    config: TrainConfig | None = None,
    net: UNet | str | Path | None = None,
    result: TrainResult | None = None,
) -> Generator[Step | Validation, None, TrainResult]:
    """Train ``net`` (a UNet, a model file to fine-tune, or None for a new preset model).

    Yields `Step` after every optimiser step and `Validation` every ``validate_every``
    steps. Returns (and keeps updating) ``result``; at the end or on ``close()`` its
    ``net`` holds the best weights by validation IoU (the last ones without hold-out).
    """
    result = result if result is not None else TrainResult()
    config = config or TrainConfig()
    device = resolve_device(config.device)
    if config.preset is None:
        config = replace(config, preset=default_preset(device))
    net, parent = _initial_net(net, data, config)
    cfg = config.resolved(_preset_of(net))
    if device.type == "cpu":
        use_all_cpu_cores()
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    if cfg.seed is not None:
        torch.manual_seed(cfg.seed)
    tiles = _Tiles(data, net, cfg.tile_size, cfg.batch_size, cfg.seed)
    net = net.to(device, memory_format=memory_format(device)).train()
    model = torch.compile(net) if cfg.compile and device.type == "cuda" else net
    optimizer = _optimizer(net, cfg)
    generator = torch.Generator(device=device)
    generator.manual_seed(cfg.seed if cfg.seed is not None else int(time.time()))
    result.config = dict(net.config)
    history: list[list[float]] = []
    validations: list[dict[str, Any]] = []
    started = time.perf_counter()
    budget_s = cfg.max_minutes * 60.0 if cfg.max_minutes else None
    tile_rate = 0.0

    def snapshot(step: int, validation: Validation | None) -> None:
        result.best_state = {
            k: v.detach().to("cpu", copy=True) for k, v in net.state_dict().items()
        }
        result.best_step = step
        result.best_iou = validation.iou if validation else None
        result.best_loss = validation.loss if validation else math.inf

    def update_metadata() -> None:
        best = next((v for v in validations if v["step"] == result.best_step), {})
        result.metadata = {
            "normalisation": dict(data.normalisation),
            "classes": checkpoint.CLASSES.get(net.n_classes),
            "training": {
                **parent,
                "preset": _preset_of(net),
                "steps": cfg.steps,
                "steps_done": result.steps_done,
                "best_step": result.best_step,
                "stopped_early": result.stopped_early,
                "optimizer": cfg.optimizer,
                "lr": cfg.lr,
                "weight_decay": cfg.weight_decay,
                "batch_size": tiles.batch_size,
                "tile_size": [tiles.sampler.in_size, tiles.sampler.out_size],
                "augment": asdict(cfg.augment) if cfg.augment else None,
                "settings": {  # what the preview docks showed: restored when fine-tuning
                    "weights": asdict(data.weight_settings),
                    "augment": asdict(cfg.augment) if cfg.augment else None,
                    "unpainted": data.unpainted,
                },
                "annotation": data.use.describe() if data.use else None,
                "seed": cfg.seed,
                "device": str(device),
                "annotated_slices": list(data.slice_indices),
                "elapsed_s": round(time.perf_counter() - started, 2),
                "history": history,  # [step, loss] every step
            },
            "validation": {
                **best,
                "region": list(validations[0]["region"]) if validations else None,
                "history": validations,
            },
        }

    def validate(step: int) -> Validation:
        event = _validate(net, data, device, cfg.batch_size, step)
        # ties (e.g. a region without cells, IoU 1) go to the lower validation loss
        is_best = result.best_iou is None or (event.iou, -event.loss) > (
            result.best_iou,
            -result.best_loss,
        )
        if is_best:
            snapshot(step, event)
        validations.append(
            {
                "step": step,
                "loss": event.loss,
                "iou": event.iou,
                "ap50": event.ap50,
                "region": list(event.region or ()),
            }
        )
        update_metadata()
        return replace(event, best=is_best)

    def finish() -> TrainResult:
        if result.best_state is None or data.validation is None:
            snapshot(result.steps_done, None)
        update_metadata()
        net.load_state_dict(result.best_state)
        result.net = net.eval()
        return result

    try:
        for step in range(1, cfg.steps + 1):
            elapsed = time.perf_counter() - started
            if budget_s is not None and elapsed > budget_s:
                result.stopped_early = True
                break
            progress = max((step - 1) / cfg.steps, elapsed / budget_s if budget_s else 0.0)
            lr = cfg.lr * lr_factor(progress)
            for group in optimizer.param_groups:
                group["lr"] = lr
            t0 = time.perf_counter()
            for _attempt in range(MAX_OUT_OF_MEMORY_RETRIES + 1):
                try:
                    loss = _optimise(model, optimizer, tiles, cfg.augment, generator, device)
                    break
                except _OUT_OF_MEMORY:
                    if device.type != "cuda" or not tiles.shrink():
                        raise
                    optimizer.zero_grad(set_to_none=True)
                    torch.cuda.empty_cache()
            else:
                raise InputError(
                    "Out of GPU memory even with the smallest tiles; use --device cpu"
                )
            loss_value = float(loss.detach())
            if not math.isfinite(loss_value):
                raise InputError(
                    f"Training diverged at step {step} (loss {loss_value}); lower the learning rate"
                )
            rate = tiles.batch_size / max(time.perf_counter() - t0, 1e-9)
            tile_rate = rate if step == 1 else 0.9 * tile_rate + 0.1 * rate
            result.steps_done = step
            history.append([step, round(loss_value, 5)])
            yield Step(step, cfg.steps, loss_value, lr, tile_rate)
            if data.validation is not None and (
                step in (1, cfg.steps) or step % cfg.validate_every == 0
            ):
                yield validate(step)  # step 1 too: the baseline of the dock's plot
        validated = bool(validations) and validations[-1]["step"] == result.steps_done
        if (
            result.stopped_early
            and data.validation is not None
            and result.steps_done
            and not validated
        ):
            yield validate(result.steps_done)  # the annealed last weights may be the best
    except GeneratorExit:
        result.stopped_early = True
        return finish()
    return finish()
