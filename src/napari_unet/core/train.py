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
import threading
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from napari_unet.core import axes as axes_
from napari_unet.core import checkpoint, metrics, postprocess, size, tiling
from napari_unet.core.annotations import Box
from napari_unet.core.augment import AugmentConfig, augment
from napari_unet.core.data import TEACHER_UNSURE, TileSampler, TrainingData, training_layout
from napari_unet.core.device import autocast, memory_format, resolve_device, use_all_cpu_cores
from napari_unet.core.io import InputError, as_image
from napari_unet.core.model import UNet, check_preset, spread_input_channels
from napari_unet.core.presets import (
    ADAMW,
    ANCHOR,
    ANCHOR_MIN_IOU,
    AUTO,
    DEFAULT_LR,
    EXACT_CHANNELS_MARGIN,
    LIGHT,
    MODEL_PRESETS,
    OPTIMIZERS,
    PAPER,
    SGD,
    TRAINING_PRESETS,
    default_preset,
)
from napari_unet.core.settings import TrainingSettings

# Ronneberger et al. 2015, section 3: SGD with momentum 0.99 (many earlier samples
# steer each update), batch 1 of large tiles.
PAPER_MOMENTUM = 0.99
WARMUP_FRACTION = 0.05  # linear warm-up, then cosine decay to FINAL_LR_FRACTION * lr
FINAL_LR_FRACTION = 0.02
PROBABILITY_FLOOR = 1e-7  # log(0) guard when a loss is computed from probabilities
VALIDATION_TILE_PX = 348  # input tile side when predicting the hold-out (few, large tiles)
# Sparse painting where intensity cannot tell cells from background (phase contrast): the
# start model's view of where cells are keeps touching unpainted cells out of the
# background band, if it sees at least this share of the painted pixels (`start_view`)
HINT_MIN_RECALL = 0.5
# Sparse painting, fine-tuning: the start model's class is a target where its probability
# is at least this (see `data.TEACHER_WEIGHT`)
TEACHER_CONFIDENCE = 0.9
# Validate at least this often (seconds), so a short run shows a curve and Stop has a
# recent score; never spending more than MAX_VALIDATION_SHARE of the time on it.
VALIDATE_EVERY_S = 5.0
MAX_VALIDATION_SHARE = 0.25
# Gradient clipping: a step's gradient norm is capped at this multiple of the median
# norm of the recent steps (scale-free, so it only cuts spikes: a rare tile full of
# heavily weighted gaps no longer throws the weights away). None: off.
GRAD_CLIP_FACTOR = 3.0
GRAD_NORM_WINDOW = 50  # recent steps for the median
GRAD_CLIP_AFTER = 10  # steps before clipping starts (the median needs a few)
VIEW_MAX_PX = 512  # the live preview of the viewed part: at most this square (its centre)
# Fine-tuning on a few painted cells: a quarter of the default learning rate (measured on
# a real 520x696 nuclei image, 10 painted cells, 600 steps from the starter: AP@0.5 on the
# rest 0.51 at 5e-4 against 0.42 at 2e-3, and no loss spike above 6x the median).
SPARSE_FINE_TUNE_LR_FACTOR = 0.25


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
    view: np.ndarray | None = None  # foreground probability of the part being looked at
    view_region: tuple[int, int, int, int, int] | None = None  # (slice_index, y0, x0, y1, x1)


@dataclass
class TrainConfig:
    """Training settings; ``None`` means the preset's default (`presets.TRAINING_PRESETS`)."""

    steps: int | None = None
    preset: str | None = None  # new model size; None: by device (ignored when a net is given)
    tile_size: int | None = None  # input tile side in pixels, rounded to a valid size
    batch_size: int | None = None
    lr: float | None = None
    optimizer: str = ADAMW  # or SGD (the paper's, momentum 0.99); see `presets.OPTIMIZERS`
    weight_decay: float = 1e-4
    validate_every: int | None = None  # steps; also after the first and the last step
    max_minutes: float | None = None  # stop early after this long (keeps the best)
    device: str = AUTO
    seed: int | None = 0
    augment: AugmentConfig | None = field(default_factory=AugmentConfig)  # None: off
    compile: bool = False  # torch.compile on CUDA (slow first steps, faster after)
    # seconds; None: VALIDATE_EVERY_S when validate_every is auto, else by steps only
    validate_every_s: float | None = None
    grad_clip: float | None = GRAD_CLIP_FACTOR  # x median recent gradient norm; None: off
    # the kept model: best validation "iou" (foreground), or "ap50" (instances; IoU of
    # the 3-class interior rewards thin cores, not separated cells)
    select_by: str = "iou"
    # pull toward the starting weights when fine-tuning (see `ANCHOR`); None: ANCHOR when
    # a saved model is fine-tuned (a resumed run: its own), else 0; 0: off
    anchor: float | None = None

    def resolved(self, preset: str) -> TrainConfig:
        """A copy with every ``None`` default filled in from the preset's defaults."""
        self.check()
        defaults = TRAINING_PRESETS.get(preset, TRAINING_PRESETS[LIGHT])
        out = copy.copy(self)
        if out.validate_every_s is None and out.validate_every is None:
            out.validate_every_s = VALIDATE_EVERY_S
        for name in ("steps", "tile_size", "batch_size", "validate_every"):
            if getattr(out, name) is None:
                setattr(out, name, defaults[name])
        if out.lr is None:
            out.lr = DEFAULT_LR[out.optimizer]
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
        if self.select_by not in ("iou", "ap50"):
            raise InputError(f"select_by must be 'iou' or 'ap50'; got {self.select_by!r}")
        if self.anchor is not None and not (math.isfinite(self.anchor) and self.anchor >= 0):
            raise InputError(f"anchor must be 0 (off) or a positive number; got {self.anchor}")
        for name in ("validate_every_s", "grad_clip"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise InputError(f"{name} must be positive (or None: off); got {value}")


@dataclass(frozen=True)
class ResumeState:
    """Where a run stopped: its last weights and the optimiser state (CPU tensors).

    Resume continues from these, not from the best weights: the optimiser's moments
    belong to the last weights, and training goes on where it stopped.
    """

    weights: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    steps_done: int
    optimizer_name: str
    anchor: float = 0.0  # the run's anchor, which its continuation keeps
    # the weights the anchor pulls toward: the first run's start, so a resumed run is
    # pulled where the uninterrupted one would be (None: no anchor, or an older file)
    anchor_to: dict[str, torch.Tensor] | None = None

    def save(self, path: str | Path) -> Path:
        """Safetensors beside the model (`checkpoint.resume_path`); never pickle."""
        info = {
            "steps_done": self.steps_done,
            "optimizer_name": self.optimizer_name,
            "anchor": self.anchor,
        }
        return checkpoint.save_resume(path, self.weights, self.optimizer, info, self.anchor_to)

    @classmethod
    def load(cls, path: str | Path) -> ResumeState:
        weights, optimizer, info, anchor_to = checkpoint.load_resume(path)
        steps, anchor = int(info.get("steps_done", 0)), float(info.get("anchor", 0.0))
        return cls(weights, optimizer, steps, info["optimizer_name"], anchor, anchor_to or None)


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
    resume: ResumeState | None = None  # last weights + optimiser state, once finished
    kept_start: bool = False  # the model trained from scored best before any step

    def best_net(self) -> UNet:
        if self.best_state is None:
            raise InputError("No model yet: training has not finished a step")
        net = UNet(**self.config)
        net.load_state_dict(self.best_state)
        return net.eval()

    def trained(self, stopped: bool = False) -> Trained | None:
        """The best model so far as a `Trained` (None before the first step)."""
        if self.best_state is None:
            return None
        return Trained(
            net=self.best_net(),
            metadata={"architecture": dict(self.config), **self.metadata},
            steps_done=self.steps_done,
            best_step=self.best_step,
            best_iou=self.best_iou,
            stopped=stopped or self.stopped_early,
            resume=self.resume,
            kept_start=self.kept_start,
        )


@dataclass(frozen=True)
class Trained:
    """A finished (or stopped) run: a CPU copy of the best net and its full metadata."""

    net: UNet  # eval mode, on the CPU
    metadata: dict[str, Any]  # what the model file stores (architecture included)
    steps_done: int
    best_step: int
    best_iou: float | None
    stopped: bool
    resume: ResumeState | None = None  # to continue where training stopped
    kept_start: bool = False  # no trained weights beat the model it started from

    def save(self, path: str | Path) -> Path:
        """Write the model with its metadata (atomic), and its resume state beside it."""
        written = checkpoint.save(path, self.net, self.metadata)
        if self.resume is not None:
            self.resume.save(checkpoint.resume_path(written))
        return written

    def note(self) -> str:
        """What a person should know about which weights were kept, and why the model
        was (or was not) held near the one it started from."""
        training = self.metadata.get("training", {})
        scores = training.get("start_scores") or {}
        chosen = (
            f"Started from {training.get('from')}, the starter that found your cells best "
            "(validation IoU before training: "
            + ", ".join(f"{name} {iou:.2f}" for name, iou in scores.items())
            + "). "
            if len(scores) > 1
            else ""
        )
        if self.kept_start:
            return chosen + (
                "No trained weights beat the model you started from on the held-out cells: "
                "it is kept unchanged. Paint more cells (or correct its mistakes) and Resume."
            )
        start_iou = training.get("start_iou")
        if start_iou is not None and start_iou < ANCHOR_MIN_IOU and not training.get("anchor"):
            return chosen + (
                f"The model you started from found few of the annotated cells (validation "
                f"IoU {start_iou:.2f} before training), so training was free to move far "
                "from it."
            )
        return chosen.strip()


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


def channel_shares(data: TrainingData) -> list[float]:
    """Each channel's share of a one-channel model's input (`model.spread_input_channels`):
    its cell-minus-background contrast on the annotated pixels (normalised intensities),
    over the sum of their sizes; negative for channels where cells are darker."""
    used = data.weights > 0
    cells, ground = used & (data.targets == 1), used & (data.targets == 0)
    contrast = [0.0] * data.in_channels
    if cells.any() and ground.any():
        images = np.moveaxis(data.images, 1, 0)  # (C, N, Y, X)
        contrast = [float(c[cells].mean() - c[ground].mean()) for c in images]
    total = sum(abs(c) for c in contrast)
    if not total > 0:  # nothing to tell the channels apart: equal shares
        return [1.0 / data.in_channels] * data.in_channels
    return [c / total for c in contrast]


def _initial_net(
    net: UNet | str | Path | None, data: TrainingData, cfg: TrainConfig
) -> tuple[UNet, dict[str, Any]]:
    parent: dict[str, Any] = {}
    started = net is not None
    if isinstance(net, (str, Path)):
        path = Path(net)
        net, meta = checkpoint.load(path)
        previous = meta.get("training", {})
        parent = {"from": path.name, "from_steps": previous.get("steps_done", 0)}
    elif net is None:
        check_preset(cfg.preset)
        if cfg.seed is not None:
            torch.manual_seed(cfg.seed)
        net = UNet(
            in_channels=data.in_channels, n_classes=data.n_classes, **MODEL_PRESETS[cfg.preset]
        )
    net = getattr(net, "_orig_mod", net)
    if started and net.in_channels == 1 < data.in_channels:
        shares = channel_shares(data)
        net = spread_input_channels(net, shares)
        parent["spread_channels"] = [round(a, 4) for a in shares]
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
    for name, kwargs in MODEL_PRESETS.items():
        if all(net.config.get(k) == v for k, v in kwargs.items()):
            return name
    return LIGHT if net.config["base_channels"] < MODEL_PRESETS[PAPER]["base_channels"] else PAPER


def _tile_sizes(net: UNet, tile_size: int) -> tuple[int, int]:
    """(input, output) tile sides: the valid input size nearest to ``tile_size``."""
    in_size = net.nearest_input_size(tile_size)
    return in_size, net.output_size(in_size)


def validate(
    net: UNet, data: TrainingData, device: torch.device, batch_size: int, step: int
) -> Validation:
    """Score ``net`` on the held-out region: `tiling.predict_tiled` with the image around
    it as context, the training loss, foreground IoU and AP@0.5 (`metrics`)."""
    region = data.validation
    assert region is not None and data.validation_weights is not None
    box = (region.y0, region.x0, region.y1, region.x1)
    image = data.images[region.index]
    probs = tiling.predict_tiled(net, image, VALIDATION_TILE_PX, batch_size, device, region=box)
    rows, cols = slice(region.y0, region.y1), slice(region.x0, region.x1)
    target = data.targets[region.index, rows, cols]
    mask = region.mask
    instances = postprocess.to_instances(probs) * mask
    labels = data.labels[region.index, rows, cols] * mask
    return Validation(
        step=step,
        loss=probability_loss(probs, target, data.validation_weights),
        iou=metrics.iou_score((target == 1) & mask, (probs[1] > 0.5) & mask),
        ap50=float(metrics.average_precision(labels, instances, thresholds=(0.5,))[0]),
        preview=probs[1],
        region=(region.slice_index, *box),
        best=False,
    )


def choose_start(
    candidates: Sequence[str | Path], data: TrainingData, config: TrainConfig
) -> tuple[str, dict[str, float]]:
    """Of several model files (the shipped starters), the one that already finds the
    annotated cells best: validation foreground IoU on the held-out annotations before any
    step (what the anchor's release measures too), with its first layer spread over the
    channels as training would. Only files that take the data's channel count, or one
    channel (spread), compete; those that take it exactly come first and win unless a
    spread one scores more than `EXACT_CHANNELS_MARGIN` above them. Returns (file, {file name: IoU});
    without a hold-out, the first candidate and no scores."""
    if not candidates:
        raise InputError("choose_start: no model files to choose from")
    channels = {p: checkpoint.in_channels(p) for p in candidates}
    usable = [p for p in candidates if channels[p] in (1, data.in_channels)]
    candidates = sorted(usable, key=lambda p: channels[p] != data.in_channels) or candidates
    if data.validation is None or len(candidates) == 1:
        return str(candidates[0]), {}
    device = resolve_device(config.device)
    scores = {}
    for path in candidates:
        net, _ = _initial_net(str(path), data, config)
        scores[Path(path).name] = round(validate(net, data, device, 1, 0).iou, 4)

    def rank(path: str | Path) -> float:  # a spread starter must beat the margin
        spread = channels[path] != data.in_channels
        return scores[Path(path).name] - (EXACT_CHANNELS_MARGIN if spread else 0.0)

    return str(max(candidates, key=rank)), scores  # the first on a tie


class StartView(NamedTuple):
    """What the start model sees on the annotated slices (both None: it does not know
    these cells)."""

    hint: np.ndarray | None  # bool, the labels' shape: cell or border class
    teacher: np.ndarray | None  # uint8, the labels' shape: its sure class, else unsure


UNSEEN = StartView(None, None)  # no start model, or one that does not know these cells


def start_view(
    net: UNet,
    image: np.ndarray,
    labels: np.ndarray,
    channels: int,
    scale: float,
    device: Any,
    frames: int = 1,
) -> StartView:
    """``net``'s prediction on the annotated slices of ``image`` (N, [C,] Y, X), normalised
    (``frames``: time points, as `TrainingData`) and resized as training does: where it
    sees cells (``hint``) and its class where its probability is at least
    `TEACHER_CONFIDENCE` (``teacher``, `data.TEACHER_UNSURE` elsewhere). Both None when
    it misses most painted pixels (`HINT_MIN_RECALL`): a model that does not know these
    cells would only mislead."""
    from napari_unet.core.normalize import normalize_stack

    stack = as_image(image, "image", channels=channels)  # (N, C, Y, X)
    label_stack = np.asarray(labels).reshape(-1, *np.shape(labels)[-2:])
    annotated = np.flatnonzero(label_stack.reshape(len(label_stack), -1).any(axis=1)).tolist()
    hint = np.zeros(label_stack.shape, dtype=bool)
    teacher = np.full(label_stack.shape, TEACHER_UNSURE, dtype=np.uint8)
    for n, x in zip(annotated, normalize_stack(stack, annotated, frames=frames)[0], strict=True):
        if scale != 1.0:
            x = size.resize(x, size.scaled_shape(x.shape, scale))
        probs = tiling.predict_tiled(net, x, VALIDATION_TILE_PX, 1, device)
        if scale != 1.0:
            probs = size.resize(probs, (len(probs), *label_stack.shape[-2:]))
        hint[n] = probs[0] < 0.5
        sure = probs.max(axis=0) >= TEACHER_CONFIDENCE
        teacher[n][sure] = probs.argmax(axis=0)[sure]
    painted = label_stack > 0
    if not painted.any() or hint[painted].mean() < HINT_MIN_RECALL:
        return UNSEEN
    return StartView(hint.reshape(np.shape(labels)), teacher.reshape(np.shape(labels)))


def probability_loss(probs: np.ndarray, target: np.ndarray, weights: np.ndarray) -> float:
    """`weighted_cross_entropy` of softmax probabilities (K, Y, X): their log is a logit
    vector whose softmax gives them back."""
    logits = torch.from_numpy(np.log(np.maximum(probs, PROBABILITY_FLOOR)))[None]
    target_t = torch.from_numpy(target.astype(np.int64))[None]
    return float(weighted_cross_entropy(logits, target_t, torch.from_numpy(weights)[None]))


def _optimizer(net: UNet, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == SGD:
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
    max_grad_norm: float | None = None,
) -> tuple[torch.Tensor, float]:
    """One step: sample, augment (on ``device``), forward, weighted loss, backward, update.

    Returns the loss and the gradient norm before clipping to ``max_grad_norm``.
    """
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
    limit = math.inf if max_grad_norm is None else max_grad_norm
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), limit)
    optimizer.step()
    return loss, float(norm)


class _Run:
    """One training run: setup, `step`, `validate` (keeping the best), `finish`.

    Holds what the loop shares: the net on its device, optimiser, tile sampler, clock,
    loss and validation histories, and the `TrainResult` kept up to date for the caller.
    """

    def __init__(
        self,
        data: TrainingData,
        config: TrainConfig,
        net: UNet | str | Path | None,
        result: TrainResult,
        resume: ResumeState | None = None,
        view: Callable[[], tuple[int, int, int, int, int] | None] | None = None,
    ) -> None:
        self.data, self.result, self.resuming, self.view = data, result, resume, view
        self.device = resolve_device(config.device)
        if config.preset is None:
            config = replace(config, preset=default_preset(self.device))
        fine_tuning, start = net is not None, net
        net, self.parent = _initial_net(net, data, config)
        # the anchor's default: on when fine-tuning a saved model; off for a new model, a
        # net passed in memory, or a gray model spread over colour channels (anchored,
        # stained RGB nuclei scored AP@0.5 0.559 against 0.599); a resumed run keeps its
        # own, pulling toward the first run's start (``ResumeState.anchor_to``)
        anchor = ANCHOR if isinstance(start, (str, Path)) else 0.0
        if "spread_channels" in self.parent:  # a gray model meets colour: it must move
            anchor = 0.0
        anchor = resume.anchor if resume is not None else anchor
        anchor = config.anchor if config.anchor is not None else anchor
        self.config_anchor, self.start_iou = config.anchor, None
        # the weights the anchor pulls toward: the first run's start when resuming one that
        # kept them, else the starting weights (taken before any resumed weights load)
        if not anchor:
            self.start_weights = []
        elif resume is not None and resume.anchor_to:
            self.start_weights = [resume.anchor_to[k].clone() for k, _ in net.named_parameters()]
        else:
            self.start_weights = [p.detach().clone() for p in net.parameters()]
        if resume is not None:
            net.load_state_dict(resume.weights)  # the last weights, not the best
            config = replace(config, optimizer=resume.optimizer_name)
        self.cfg = cfg = config.resolved(_preset_of(net))
        cfg.anchor = anchor
        sparse = data.use is not None and bool(data.use.sparse_slices)
        if config.lr is None and fine_tuning and sparse:
            cfg.lr = DEFAULT_LR[cfg.optimizer] * SPARSE_FINE_TUNE_LR_FACTOR
        if self.device.type == "cpu":
            use_all_cpu_cores()
        elif self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        if cfg.seed is not None:
            torch.manual_seed(cfg.seed)
        self.tiles = _Tiles(data, net, cfg.tile_size, cfg.batch_size, cfg.seed)
        self.net = net.to(self.device, memory_format=memory_format(self.device)).train()
        self.start_weights = [w.to(self.device) for w in self.start_weights]
        compiled = cfg.compile and self.device.type == "cuda"
        self.model = torch.compile(self.net) if compiled else self.net
        self.optimizer = _optimizer(self.net, cfg)
        if resume is not None:
            self.optimizer.load_state_dict(resume.optimizer)  # momentum goes on
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(cfg.seed if cfg.seed is not None else int(time.time()))
        result.config = dict(self.net.config)
        self.history: list[list[float]] = []  # [step, loss] every step
        self.validations: list[dict[str, Any]] = []
        self.started = time.perf_counter()
        self.budget_s = cfg.max_minutes * 60.0 if cfg.max_minutes else None
        self.tile_rate = 0.0
        self.grad_norms: list[float] = []
        self.last_validation = self.started
        self.validation_s = 0.0  # time spent validating

    def out_of_time(self) -> bool:
        """True (and the run marked as stopped early) once the time budget is spent."""
        elapsed = time.perf_counter() - self.started
        if self.budget_s is not None and elapsed > self.budget_s:
            self.result.stopped_early = True
        return self.result.stopped_early

    def step(self, step: int) -> Step:
        """One optimiser step at the scheduled learning rate (smaller tiles on GPU OOM)."""
        cfg, elapsed = self.cfg, time.perf_counter() - self.started
        progress = max((step - 1) / cfg.steps, elapsed / self.budget_s if self.budget_s else 0.0)
        if self.resuming is not None:  # the optimiser is warm already: no second warm-up
            progress = max(progress, WARMUP_FRACTION)
        lr = cfg.lr * lr_factor(progress)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        t0 = time.perf_counter()
        loss = float(self._optimise_shrinking_on_oom().detach())
        self._pull_to_start(lr)
        if not math.isfinite(loss):
            raise InputError(
                f"Training diverged at step {step} (loss {loss}); lower the learning rate"
            )
        rate = self.tiles.batch_size / max(time.perf_counter() - t0, 1e-9)
        self.tile_rate = rate if step == 1 else 0.9 * self.tile_rate + 0.1 * rate
        self.result.steps_done = step
        self.history.append([step, round(loss, 5)])
        return Step(step, cfg.steps, loss, lr, self.tile_rate)

    def anchor_to(self) -> dict[str, torch.Tensor] | None:
        """The anchor's start weights by parameter name, on the CPU (None: no anchor)."""
        if not self.start_weights:
            return None
        names = [name for name, _ in self.net.named_parameters()]
        return {
            name: w.detach().to("cpu", copy=True)
            for name, w in zip(names, self.start_weights, strict=True)
        }

    def release_anchor_if_unfit(self, baseline: Validation) -> Validation:
        """A start model that does not yet find the annotated cells (validation IoU below
        `ANCHOR_MIN_IOU` before any step, e.g. the nuclei starter on phase contrast) has
        nothing worth keeping: the default anchor is let go, so it can change freely."""
        self.start_iou = baseline.iou
        if self.config_anchor is None and baseline.iou < ANCHOR_MIN_IOU:
            self.cfg.anchor, self.start_weights = 0.0, []
        return baseline

    def _pull_to_start(self, lr: float) -> None:
        """The anchor: every weight moves lr x anchor of the way back to its start."""
        if not self.start_weights:
            return
        factor = min(lr * self.cfg.anchor, 1.0)
        with torch.no_grad():
            for weight, start in zip(self.net.parameters(), self.start_weights, strict=True):
                weight.lerp_(start, factor)

    def _max_grad_norm(self) -> float | None:
        """``grad_clip`` x the median gradient norm of the recent steps (None: no cap yet)."""
        if self.cfg.grad_clip is None or len(self.grad_norms) < GRAD_CLIP_AFTER:
            return None
        return self.cfg.grad_clip * float(np.median(self.grad_norms[-GRAD_NORM_WINDOW:]))

    def _optimise_shrinking_on_oom(self) -> torch.Tensor:
        for _attempt in range(MAX_OUT_OF_MEMORY_RETRIES + 1):
            try:
                loss, norm = _optimise(
                    self.model,
                    self.optimizer,
                    self.tiles,
                    self.cfg.augment,
                    self.generator,
                    self.device,
                    self._max_grad_norm(),
                )
                if math.isfinite(norm):
                    self.grad_norms.append(norm)
                return loss
            except _OUT_OF_MEMORY:
                if self.device.type != "cuda" or not self.tiles.shrink():
                    raise
                self.optimizer.zero_grad(set_to_none=True)
                torch.cuda.empty_cache()
        raise InputError("Out of GPU memory even with the smallest tiles; use --device cpu")

    def validation_due(self, step: int) -> bool:
        """After the first and the last step, every ``validate_every`` steps, and every
        ``validate_every_s`` seconds while validating takes under a quarter of the time."""
        cfg = self.cfg
        due = step in (1, cfg.steps) or step % cfg.validate_every == 0
        if not due and cfg.validate_every_s is not None:
            now = time.perf_counter()
            cheap = self.validation_s <= MAX_VALIDATION_SHARE * (now - self.started)
            due = cheap and now - self.last_validation >= cfg.validate_every_s
        return self.data.validation is not None and due

    def baseline_due(self) -> bool:
        """Fine-tuning a saved model: score it before any step, so that it is kept (and
        said so) when no trained weights beat it."""
        return bool(self.parent) and self.resuming is None and self.data.validation is not None

    def last_validation_due(self) -> bool:
        """After an early stop, the annealed last weights may be the best: validate them."""
        done = self.result.steps_done
        validated = bool(self.validations) and self.validations[-1]["step"] == done
        held_out = self.data.validation is not None
        return self.result.stopped_early and held_out and done > 0 and not validated

    def validate(self, step: int) -> Validation:
        """Score the hold-out; keep the weights when they are the best so far."""
        started = time.perf_counter()
        event = validate(self.net, self.data, self.device, self.cfg.batch_size, step)
        event = self._with_view(event)
        self.last_validation = time.perf_counter()
        self.validation_s += self.last_validation - started
        result = self.result
        # ties (e.g. a region without cells, IoU 1) go to the lower validation loss
        best = next((v for v in self.validations if v["step"] == result.best_step), None)
        is_best = (
            result.best_iou is None
            or best is None
            or self.selection_key(event.ap50, event.iou, event.loss)
            > self.selection_key(best["ap50"], result.best_iou, result.best_loss)
        )
        if is_best:
            self.keep(step, event)
        self.validations.append(
            {
                "step": step,
                "loss": event.loss,
                "iou": event.iou,
                "ap50": event.ap50,
                "region": list(event.region or ()),
            }
        )
        self.update_metadata()
        return replace(event, best=is_best)

    def _with_view(self, event: Validation) -> Validation:
        """Add the prediction of the part of the image being looked at (``view()``: the
        slice index in the user's image and y0, x0, y1, x1), when that slice is annotated."""
        box = self.view() if self.view is not None else None
        if box is None or box[0] not in self.data.slice_indices:
            return event
        index = self.data.slice_indices.index(box[0])
        height, width = self.data.images.shape[-2:]
        y0, x0, y1, x1 = _clip_view(box[1:], height, width)
        if y1 <= y0 or x1 <= x0:
            return event
        probs = tiling.predict_tiled(
            self.net,
            self.data.images[index],
            VALIDATION_TILE_PX,
            self.cfg.batch_size,
            self.device,
            region=(y0, x0, y1, x1),
        )
        self.net.train()
        return replace(event, view=probs[1], view_region=(box[0], y0, x0, y1, x1))

    def selection_key(self, ap50: float | None, iou: float, loss: float) -> tuple:
        """What "best" means: validation IoU, or AP@0.5 first with ``select_by="ap50"``."""
        lead = (ap50 or 0.0,) if self.cfg.select_by == "ap50" else ()
        return (*lead, iou, -loss)

    def keep(self, step: int, validation: Validation | None) -> None:
        """Copy the current weights to the CPU as the best model."""
        result = self.result
        result.best_state = {
            k: v.detach().to("cpu", copy=True) for k, v in self.net.state_dict().items()
        }
        result.best_step = step
        result.best_iou = validation.iou if validation else None
        result.best_loss = validation.loss if validation else math.inf

    def update_metadata(self) -> None:
        result, cfg, data, tiles = self.result, self.cfg, self.data, self.tiles
        best = next((v for v in self.validations if v["step"] == result.best_step), {})
        result.metadata = {
            "normalisation": dict(data.normalisation),
            "input": dict(data.input),
            "classes": checkpoint.CLASSES.get(self.net.n_classes),
            "training": {
                **self.parent,
                "preset": _preset_of(self.net),
                "steps": cfg.steps,
                "steps_done": result.steps_done,
                "best_step": result.best_step,
                "stopped_early": result.stopped_early,
                "kept_start": result.kept_start,  # no trained weights beat the start model
                "resumed": self.resuming is not None,
                "grad_clip": cfg.grad_clip,
                "optimizer": cfg.optimizer,
                "lr": cfg.lr,
                "weight_decay": cfg.weight_decay,
                "anchor": cfg.anchor,
                "start_iou": self.start_iou,  # validation IoU of the start model, before any step
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
                "device": str(self.device),
                "annotated_slices": list(data.slice_indices),
                "elapsed_s": round(time.perf_counter() - self.started, 2),
                "history": self.history,
            },
            "validation": {
                **best,
                "region": list(self.validations[0]["region"]) if self.validations else None,
                "history": self.validations,
            },
        }

    def finish(self) -> TrainResult:
        """Load the best weights (the last ones without a hold-out) into the net; keep
        the last weights and the optimiser state for Resume."""
        result = self.result
        if result.best_state is None or self.data.validation is None:
            self.keep(result.steps_done, None)
        result.resume = ResumeState(
            weights={k: v.detach().to("cpu", copy=True) for k, v in self.net.state_dict().items()},
            optimizer=_to_cpu(self.optimizer.state_dict()),
            steps_done=result.steps_done,
            optimizer_name=self.cfg.optimizer,
            anchor=self.cfg.anchor,
            anchor_to=self.anchor_to(),
        )
        result.kept_start = result.best_step == 0 and self.baseline_due()
        self.update_metadata()
        self.net.load_state_dict(result.best_state)
        result.net = self.net.eval()
        return result


def train(
    data: TrainingData,
    config: TrainConfig | None = None,
    net: UNet | str | Path | None = None,
    result: TrainResult | None = None,
    resume: ResumeState | None = None,
    view: Callable[[], tuple[int, int, int, int, int] | None] | None = None,
) -> Generator[Step | Validation, None, TrainResult]:
    """Train ``net`` (a UNet, a model file to fine-tune, or None for a new preset model).

    Yields `Step` after every optimiser step and `Validation` every ``validate_every``
    steps or ``validate_every_s`` seconds (and, fine-tuning a saved model, at step 0).
    Returns (and keeps updating) ``result``; at the end or on ``close()`` (Stop: the last
    weights are validated once more) its ``net`` holds the best weights by validation
    IoU (the last ones without hold-out) and ``resume`` the last weights and optimiser
    state. ``resume``: continue such a state (``net`` gives the architecture). ``view``:
    returns the part of the image being looked at (slice, y0, x0, y1, x1) or None; each
    `Validation` then carries its prediction too (the dock's live preview).
    """
    result = result if result is not None else TrainResult()
    run = _Run(data, config or TrainConfig(), net, result, resume, view)
    try:
        if run.baseline_due():
            yield run.release_anchor_if_unfit(run.validate(0))  # kept if nothing beats it
        for step in range(1, run.cfg.steps + 1):
            if run.out_of_time():
                break
            yield run.step(step)
            if run.validation_due(step):
                yield run.validate(step)  # step 1 too: the baseline of the dock's plot
        if run.last_validation_due():
            yield run.validate(run.result.steps_done)
    except GeneratorExit:  # Stop: the last weights may be the best; no more events
        run.result.stopped_early = True
        if run.last_validation_due():
            run.validate(run.result.steps_done)
    return run.finish()


def _channels_of(start_from: UNet | str | Path | None) -> int | None:
    return int(start_from.in_channels) if isinstance(start_from, UNet) else None


class _Pair(NamedTuple):
    """One image/labels pair laid out as `TrainingData` takes it (`training_layout`)."""

    image: np.ndarray  # (N, [C,] Y, X)
    labels: np.ndarray  # (N, Y, X) or (Y, X)
    frames: int  # time points, each normalised on its own


def _pairs(
    image: np.ndarray,
    labels: np.ndarray,
    axes: str | None,
    channels: Sequence[int] | None,
    start_from: UNet | str | Path | None,
    extra_pairs: Sequence[tuple[np.ndarray, np.ndarray]] = (),
    background: np.ndarray | None = None,
) -> tuple[list[_Pair], int, np.ndarray | None]:
    """Every pair laid out, the channel count and the first pair's ``background`` strokes
    laid out as its labels. Extra pairs have the first one's axes and channels."""
    known = _channels_of(start_from)
    found = axes_.parse(axes, np.shape(image), known)
    first, first_labels, n_channels, background = training_layout(
        image, labels, found, channels, background
    )
    pairs = [_Pair(first, first_labels, found.size("T"))]
    for extra_image, extra_labels in extra_pairs:
        extra_found = axes_.parse(axes, np.shape(extra_image), known)
        extra = training_layout(extra_image, extra_labels, extra_found, channels)
        pairs.append(_Pair(extra[0], extra[1], extra_found.size("T")))
    return pairs, n_channels, background


def _training_data(
    image: np.ndarray,
    labels: np.ndarray,
    regions: list[Box] | None,
    axes: str | None,
    channels: Sequence[int] | None,
    start_from: UNet | str | Path | None,
    extra_pairs: Sequence[tuple[np.ndarray, np.ndarray]] = (),
    background: np.ndarray | None = None,
    **options: Any,
) -> TrainingData:
    """Every image/labels pair laid out (`_pairs`) and built (`_data_from_pairs`, which
    takes ``options``)."""
    laid_out = _pairs(image, labels, axes, channels, start_from, extra_pairs, background)
    return _data_from_pairs(laid_out, regions, start_from, **options)


def _data_from_pairs(
    laid_out: tuple[list[_Pair], int, np.ndarray | None],
    regions: list[Box] | None,
    start_from: UNet | str | Path | None,
    n_classes: int | None = None,
    views: Sequence[StartView] | None = None,
    **options: Any,
) -> TrainingData:
    """Laid-out pairs (`_pairs`) as `TrainingData.from_pairs` takes them (``options``: its
    keywords); ``regions`` and the background strokes belong to the first pair,
    ``views`` (the start model's, one per pair) give the cell hints and the teaching."""
    pairs, n_channels, background = laid_out
    return TrainingData.from_pairs(
        [(pairs[0].image, pairs[0].labels, regions)] + [(p.image, p.labels) for p in pairs[1:]],
        n_classes=n_classes or checkpoint.classes_to_train(start_from),
        channels=n_channels,
        scale=None,
        background=background,
        frames=[p.frames for p in pairs],
        cell_hints=None if views is None else [v.hint for v in views],
        teachers=None if views is None else [v.teacher for v in views],
        **options,
    )


def _clip_view(box, height: int, width: int) -> tuple[int, int, int, int]:
    """The view box inside the image, at most ``VIEW_MAX_PX`` square around its centre."""
    y0, x0, y1, x1 = (int(round(v)) for v in box)
    cy, cx = (y0 + y1) // 2, (x0 + x1) // 2
    half = VIEW_MAX_PX // 2
    if y1 - y0 > VIEW_MAX_PX:
        y0, y1 = cy - half, cy + half
    if x1 - x0 > VIEW_MAX_PX:
        x0, x1 = cx - half, cx + half
    return max(y0, 0), max(x0, 0), min(y1, height), min(x1, width)


def _to_cpu(state: Any) -> Any:
    """A copy of an optimiser state dict with every tensor on the CPU."""
    if isinstance(state, torch.Tensor):
        return state.detach().to("cpu", copy=True)
    if isinstance(state, dict):
        return {k: _to_cpu(v) for k, v in state.items()}
    if isinstance(state, list):
        return [_to_cpu(v) for v in state]
    return state


def training_job(
    image: np.ndarray,
    labels: np.ndarray,
    config: TrainConfig | Mapping[str, Any] | None = None,
    start_from: UNet | str | Path | None = None,
    regions: list[Box] | None = None,
    stop: threading.Event | None = None,
    result: TrainResult | None = None,
    resume: ResumeState | None = None,
    background: np.ndarray | None = None,
    training: TrainingSettings | None = None,
    view: Callable[[], tuple[int, int, int, int, int] | None] | None = None,
    extra_pairs: Sequence[tuple[np.ndarray, np.ndarray]] = (),
    n_classes: int | None = None,
    axes: str | None = None,
    channels: Sequence[int] | None = None,
    channel_names: Sequence[str] | None = None,
) -> Generator[Step | Validation, None, Trained | None]:
    """The one training entry point of the docks and the CLI: targets and weight maps of
    ``labels`` (inside ``regions`` when given), then `train`; returns the best model.

    ``extra_pairs``: more (image, labels) pairs of any sizes trained on together (see
    `TrainingData.from_pairs`). ``n_classes``: None for the fine-tuned model's, or
    `checkpoint.DEFAULT_CLASSES` for a new one. Images are resized when the cells are
    large (`core.size`; the factor goes into the model's metadata).

    ``config``: a `TrainConfig` or its keyword arguments. ``start_from``: None (a new model
    of ``config.preset``), a model file, a UNet (copied: the caller's is not changed), or a
    list of model files of one kind (the shipped starters): the one that scores best on
    the held-out annotations before training is fine-tuned (`choose_start`; the scores go
    into the metadata as ``training.start_scores``).
    ``stop`` set: ends after the current step, keeping the best model. ``result`` (if
    given) is kept up to date, so a caller interrupted mid-step still has the best model.
    ``resume``: a `ResumeState` (``Trained.resume``) to continue, with ``start_from``
    the net it belongs to. On sparse painting the start model (on resume: its last
    weights) spares the cells it sees from the background band and teaches where it is
    sure (`start_view`). ``background``: background strokes (non-zero = no cell);
    ``training``: the `TrainingSettings` the preview docks show (loss weights,
    augmentation, unpainted pixels); its augmentation replaces ``config.augment``.
    ``view``: see `train`.
    Returns None when stopped before the first step.

    ``axes`` (letters of TZCYX; guessed when None: YX, ZYX, RGB as YXC) and ``channels``
    (indices into C) say where the channels are; every T/Z slice with labels trains. The
    model's input channels are the picked ones; they are stored in its metadata
    ("input", with ``channel_names``) so prediction offers the same.
    """
    stop = stop or threading.Event()
    config = config if isinstance(config, TrainConfig) else TrainConfig(**(config or {}))
    if training is not None:
        training.check()
        config = replace(config, augment=training.augment)
    config.check()
    training = training or TrainingSettings(augment=config.augment)
    candidates = list(start_from) if isinstance(start_from, (list, tuple)) else None
    if candidates is not None:
        start_from = candidates[0]  # the data's classes and channels: the same for all

    # laid out once: the builds and the start model's views all read these
    laid_out = _pairs(image, labels, axes, channels, start_from, extra_pairs, background)

    def build(views: Sequence[StartView] | None = None) -> TrainingData:
        built = _data_from_pairs(
            laid_out,
            regions,
            start_from,
            n_classes=n_classes,
            views=views,
            unpainted=training.unpainted,
            weight_settings=training.weights,
        )
        built.input = {
            "axes": axes_.parse(axes, np.shape(image), _channels_of(start_from)).order,
            "channels": built.in_channels,
            "channel_indices": None if channels is None else [int(c) for c in channels],
            "channel_names": None if channel_names is None else [str(n) for n in channel_names],
        }
        return built

    data = build()
    start_scores = None
    if stop.is_set():  # each stage before the first step can take seconds: Stop between them
        return None
    if candidates is not None:
        start_from, start_scores = choose_start(candidates, data, config)
    if start_from is not None and data.use and data.use.sparse_slices:
        pairs, n_channels, _ = laid_out
        start_net = _initial_net(
            copy.deepcopy(start_from) if isinstance(start_from, UNet) else start_from,
            data,
            config,
        )[0]
        if resume is not None:  # the model as it is now teaches the resumed run, as the
            start_net.load_state_dict(resume.weights)  # start model taught the first
        scale = float(data.normalisation.get("scale") or 1.0)
        device = resolve_device(config.device)
        views = []
        for pair in pairs:  # each pair's view (painted cells it does not find: unseen)
            if stop.is_set():
                return None
            views.append(
                start_view(
                    start_net, pair.image, pair.labels, n_channels, scale, device, pair.frames
                )
            )
        if any(v.hint is not None for v in views) and not stop.is_set():
            data = build(views)  # again: the band spares the cells it sees, it teaches
            if candidates is not None:  # scored again on the hold-out as it is now
                start_scores = choose_start(candidates, data, config)[1]
    if stop.is_set():
        return None
    if isinstance(start_from, torch.nn.Module):
        start_from = copy.deepcopy(start_from)
    result = result if result is not None else TrainResult()
    job = train(data, config, net=start_from, result=result, resume=resume, view=view)
    for event in job:
        yield event
        if stop.is_set():
            job.close()  # the core keeps the best model so far
            break
    if start_scores is not None and result.metadata:
        result.metadata["training"]["start_scores"] = start_scores
    return result.trained(stopped=stop.is_set())
