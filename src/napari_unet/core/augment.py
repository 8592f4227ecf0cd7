"""Training-time augmentation in torch: elastic deformation, geometry and intensity.

Runs on the device of the tensors it gets (CPU, CUDA, MPS), on whole batches, with
per-sample random parameters. All geometric changes (elastic field, flips, 90 degree
turns, small rotation, scaling) are composed into ONE sampling grid so that image,
labels and weights are resampled once and move together. Not a data loader.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from napari_unet.core.events import Done
from napari_unet.core.io import InputError
from napari_unet.core.normalize import PERCENTILES, normalize

if TYPE_CHECKING:
    import torch

# Ronneberger et al. 2015, section 3.1: "random displacement vectors on a coarse 3 by 3
# grid ... sampled from a Gaussian distribution with 10 pixels standard deviation.
# Per-pixel displacements are then computed using bicubic interpolation."
GRID = 3
SIGMA_PX = 10.0

_EXACT_FLOAT32_INT = 2**24  # integers above this are not exact in float32


@dataclass
class AugmentConfig:
    """What to randomise; every augmentation has an off switch (neutral value).

    Ranges are ``(low, high)`` drawn uniformly per sample; ``(1, 1)``/``(0, 0)`` is off.
    """

    elastic: bool = True
    grid: int = GRID  # coarse grid nodes per axis (>= 2); nodes on the corners
    sigma_px: float = SIGMA_PX  # std of the node displacements, pixels
    flips: bool = True  # random up/down and left/right flips
    rot90: bool = True  # random multiples of 90 degrees (180 only on non-square tiles)
    rotate_deg: float = 10.0  # small rotation, uniform in [-rotate_deg, rotate_deg]
    scale: tuple[float, float] = (0.9, 1.1)  # zoom factor
    gain: tuple[float, float] = (0.8, 1.2)  # multiplies intensities
    offset: tuple[float, float] = (-0.1, 0.1)  # added to intensities (normalised units)
    gamma: tuple[float, float] = (0.8, 1.25)  # on the min-max rescaled sample
    noise_std: float = 0.03  # Gaussian noise, std uniform in [0, noise_std]
    blur_sigma_px: tuple[float, float] = (0.0, 1.0)  # Gaussian blur sigma, pixels

    @classmethod
    def off(cls, **changes: object) -> AugmentConfig:
        """Everything off (identity), then ``changes`` switched on; handy for previews."""
        neutral = dict(
            elastic=False,
            flips=False,
            rot90=False,
            rotate_deg=0.0,
            scale=(1.0, 1.0),
            gain=(1.0, 1.0),
            offset=(0.0, 0.0),
            gamma=(1.0, 1.0),
            noise_std=0.0,
            blur_sigma_px=(0.0, 0.0),
        )
        neutral.update(changes)
        return cls(**neutral)  # type: ignore[arg-type]

    @property
    def geometric(self) -> bool:
        """Whether any resampling happens (False: image/labels/weights keep their pixels)."""
        return (
            (self.elastic and self.sigma_px > 0)
            or self.flips
            or self.rot90
            or self.rotate_deg != 0
            or tuple(self.scale) != (1.0, 1.0)
        )

    def check(self) -> None:
        """Raise InputError for settings that cannot work."""
        if self.grid < 2:
            raise InputError(f"Elastic grid must have at least 2 nodes per axis; got {self.grid}")
        if self.sigma_px < 0 or self.noise_std < 0 or self.rotate_deg < 0:
            raise InputError("sigma_px, noise_std and rotate_deg must not be negative")
        for name in ("scale", "gain", "offset", "gamma", "blur_sigma_px"):
            low, high = getattr(self, name)
            if low > high:
                raise InputError(f"{name}: low {low} is above high {high}")
        if min(self.scale) <= 0 or min(self.gamma) <= 0 or min(self.blur_sigma_px) < 0:
            raise InputError("scale and gamma must be positive, blur_sigma_px not negative")


def _uniform(n: int, bounds: tuple[float, float], generator) -> torch.Tensor:
    import torch

    low, high = (float(b) for b in bounds)
    gen_device = generator.device if generator is not None else "cpu"
    u = torch.rand(n, generator=generator, device=gen_device)
    return (low + (high - low) * u).cpu()


def elastic_field(
    batch: int,
    height: int,
    width: int,
    grid: int = GRID,
    sigma_px: float = SIGMA_PX,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Dense displacements ``(B, H, W, 2)`` in pixels, last axis ``(dy, dx)``.

    Node displacements on a ``grid x grid`` lattice ~ N(0, sigma_px), bicubic upsampled
    with the nodes on the tile corners (``align_corners=True``): the field equals the
    drawn values exactly at the nodes and is smooth in between.
    """
    import torch

    if grid < 2:
        raise InputError(f"Elastic grid must have at least 2 nodes per axis; got {grid}")
    gen_device = generator.device if generator is not None else "cpu"
    nodes = torch.randn(batch, 2, grid, grid, generator=generator, device=gen_device)
    nodes = (nodes * float(sigma_px)).to(device if device is not None else gen_device)
    # Bicubic upsampling is separable and linear: apply torch's own 1D bicubic weights as
    # two small matrices (same numbers as F.interpolate on the nodes, ~10x faster).
    rows = _bicubic_matrix(height, grid, nodes.device)
    cols = _bicubic_matrix(width, grid, nodes.device)
    return torch.einsum("yi,bcij,xj->byxc", rows, nodes, cols).contiguous()


def _bicubic_matrix(size: int, grid: int, device) -> torch.Tensor:
    """(size, grid): F.interpolate's bicubic weights of each node, nodes on the ends."""
    import torch
    import torch.nn.functional as F

    unit = torch.eye(grid, device=device).reshape(grid, 1, grid, 1)
    weights = F.interpolate(unit, size=(size, 1), mode="bicubic", align_corners=True)
    return weights[:, 0, :, 0].T


@dataclass(frozen=True)
class Draw:
    """The random parameters of one batch, on CPU except ``source_px``."""

    source_px: torch.Tensor | None  # (B, H, W, 2) source (y, x) per output pixel, or None
    gain: torch.Tensor  # (B,)
    offset: torch.Tensor
    gamma: torch.Tensor
    noise_std: torch.Tensor
    blur_sigma_px: torch.Tensor
    noise_seed: int


def draw(
    batch: int,
    height: int,
    width: int,
    config: AugmentConfig,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> Draw:
    """Draw every random parameter for a batch, in a fixed order (seeded = repeatable).

    The same numbers are drawn whatever is switched off, so switching one augmentation
    off does not change the others for a given seed.
    """
    import torch

    config.check()
    field_px = elastic_field(batch, height, width, config.grid, config.sigma_px, generator, device)
    gen_device = generator.device if generator is not None else "cpu"
    flip_y, flip_x = (torch.rand(2, batch, generator=generator, device=gen_device) < 0.5).cpu()
    turns = torch.randint(0, 4, (batch,), generator=generator, device=gen_device).cpu()
    angle = _uniform(batch, (-config.rotate_deg, config.rotate_deg), generator)
    zoom = _uniform(batch, config.scale, generator)
    gain = _uniform(batch, config.gain, generator)
    offset = _uniform(batch, config.offset, generator)
    gamma = _uniform(batch, config.gamma, generator)
    noise_std = _uniform(batch, (0.0, config.noise_std), generator)
    blur = _uniform(batch, config.blur_sigma_px, generator)
    noise_seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=gen_device))

    source = None
    if config.geometric:
        if not config.elastic:
            field_px = torch.zeros_like(field_px)
        if not config.flips:
            flip_y[:] = False
            flip_x[:] = False
        if not config.rot90:
            turns[:] = 0
        elif height != width:
            turns = turns - turns % 2  # a quarter turn would not fit a non-square tile
        matrix = _matrix(flip_y, flip_x, turns, angle, zoom)
        source = _source_px(matrix.to(field_px.device), field_px, height, width)
    return Draw(source, gain, offset, gamma, noise_std, blur, noise_seed)


def _matrix(flip_y, flip_x, turns, angle_deg, zoom) -> torch.Tensor:
    """(B, 2, 2) maps output offsets (y, x) from the tile centre to source offsets."""
    import torch

    theta = torch.deg2rad(angle_deg) + turns.to(torch.float32) * (math.pi / 2)
    cos, sin = torch.cos(theta), torch.sin(theta)
    rotation = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
    mirror = torch.diag_embed(
        torch.stack([1.0 - 2.0 * flip_y.float(), 1.0 - 2.0 * flip_x.float()], -1)
    )
    # Exact quarter turns: cos/sin of multiples of pi/2 otherwise leave 1e-8 residues.
    rotation = torch.where(angle_deg[:, None, None] == 0, rotation.round(), rotation)
    return rotation @ mirror / zoom[:, None, None]


def _source_px(matrix, field_px, height: int, width: int) -> torch.Tensor:
    import torch

    device = field_px.device
    ys = torch.arange(height, dtype=torch.float32, device=device)
    xs = torch.arange(width, dtype=torch.float32, device=device)
    centre = torch.tensor([(height - 1) / 2, (width - 1) / 2], device=device)
    out = torch.stack(torch.meshgrid(ys, xs, indexing="ij"), -1) - centre  # (H, W, 2)
    affine = torch.einsum("bij,hwj->bhwi", matrix, out)
    return centre + affine + field_px


def _normalised_grid(source_px, height: int, width: int) -> torch.Tensor:
    """Pixel (y, x) -> grid_sample's (x, y) in [-1, 1] with align_corners=True."""
    import torch

    scale = torch.tensor(
        [2.0 / max(width - 1, 1), 2.0 / max(height - 1, 1)], device=source_px.device
    )
    return source_px.flip(-1) * scale - 1.0


def _check(image, labels, weights) -> None:
    import torch

    if image.ndim != 4 or not torch.is_floating_point(image):
        raise InputError(
            f"augment: image must be a float tensor (B, C, H, W); got {tuple(image.shape)} "
            f"{image.dtype}"
        )
    batch_hw = (image.shape[0], *image.shape[2:])
    for name, tensor in (("labels", labels), ("weights", weights)):
        if tensor is not None and tuple(tensor.shape) != batch_hw:
            raise InputError(
                f"augment: {name} must have shape (B, H, W) = {batch_hw} like the image; "
                f"got {tuple(tensor.shape)}"
            )
    if labels is not None and (torch.is_floating_point(labels) or labels.dtype == torch.bool):
        raise InputError(f"augment: labels must be an integer tensor; got {labels.dtype}")


def _resample(tensor, grid, mode: str) -> torch.Tensor:
    import torch.nn.functional as F

    return F.grid_sample(tensor, grid, mode=mode, padding_mode="reflection", align_corners=True)


def _resample_labels(labels, grid) -> torch.Tensor:
    import torch

    small = labels.dtype in (torch.uint8, torch.int8, torch.int16, torch.uint16)
    exact = torch.float32
    if not small and labels.numel() and int(labels.abs().max()) >= _EXACT_FLOAT32_INT:
        exact = torch.float64  # large ids: keep them exact (not available on MPS)
    values = _resample(labels[:, None].to(exact), grid.to(exact), "nearest")
    return values[:, 0].round().to(labels.dtype)


def _blur(image, sigma_px) -> torch.Tensor:
    """Separable Gaussian blur with one sigma per sample; mirrored borders."""
    import torch
    import torch.nn.functional as F

    batch, channels, height, width = image.shape
    radius = min(int(math.ceil(3 * float(sigma_px.max()))), height - 1, width - 1)
    if radius < 1:
        return image
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    safe = sigma_px.clamp_min(1e-6)[:, None]
    kernel = torch.exp(-0.5 * (offsets[None] / safe) ** 2)
    kernel = torch.where(sigma_px[:, None] > 0, kernel, (offsets[None] == 0).float())
    kernel = kernel / kernel.sum(1, keepdim=True)
    # Tails of a narrow Gaussian are denormal floats, which make CPU convolutions ~30x
    # slower; they are far below float32 precision of the result anyway.
    kernel = torch.where(kernel < 1e-12, 0.0, kernel).repeat_interleave(channels, 0)
    kernel = kernel.to(image.device, image.dtype)
    flat = image.reshape(1, batch * channels, height, width)
    flat = F.pad(flat, (radius, radius, radius, radius), mode="reflect")
    flat = F.conv2d(flat, kernel[:, None, :, None], groups=batch * channels)
    flat = F.conv2d(flat, kernel[:, None, None, :], groups=batch * channels)
    return flat.reshape(batch, channels, height, width)


def _gamma(image, gamma) -> torch.Tensor:
    """Gamma on each sample/channel rescaled to [0, 1], mapped back to its own range."""
    low = image.amin(dim=(2, 3), keepdim=True)
    span = (image.amax(dim=(2, 3), keepdim=True) - low).clamp_min(1e-8)
    unit = ((image - low) / span).clamp(0, 1)
    return low + span * unit ** gamma[:, None, None, None]


def _intensity(image, params: Draw, config: AugmentConfig) -> torch.Tensor:
    import torch

    device, dtype = image.device, image.dtype
    per_sample = {
        name: getattr(params, name).to(device, dtype)[:, None, None, None]
        for name in ("gain", "offset")
    }
    if max(config.blur_sigma_px) > 0:
        image = _blur(image, params.blur_sigma_px)
    if tuple(config.gamma) != (1.0, 1.0):
        image = _gamma(image, params.gamma.to(device, dtype))
    if tuple(config.gain) != (1.0, 1.0) or tuple(config.offset) != (0.0, 0.0):
        image = image * per_sample["gain"] + per_sample["offset"]
    if config.noise_std > 0:
        noise_gen = torch.Generator(device=device).manual_seed(params.noise_seed)
        noise = torch.randn(image.shape, generator=noise_gen, device=device, dtype=dtype)
        image = image + noise * params.noise_std.to(device, dtype)[:, None, None, None]
    return image


def augment(
    image: torch.Tensor,
    labels: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
    config: AugmentConfig | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Randomly augment a batch; returns ``(image, labels, weights)`` like the inputs.

    ``image`` float (B, C, H, W); ``labels`` integer (B, H, W), resampled nearest so no
    new values appear; ``weights`` float (B, H, W), bilinear (0 = ignored stays ~0).
    One geometric transform per sample for all three, mirrored outside the tile;
    intensity changes touch only the image. Deterministic for a seeded CPU generator.
    """

    config = config if config is not None else AugmentConfig()
    _check(image, labels, weights)
    batch, _, height, width = image.shape
    params = draw(batch, height, width, config, generator, image.device)
    if params.source_px is not None:
        grid = _normalised_grid(params.source_px, height, width)
        in_dtype = image.dtype
        image = _resample(image.float(), grid, "bilinear").to(in_dtype)
        if labels is not None:
            labels = _resample_labels(labels, grid)
        if weights is not None:
            w_dtype = weights.dtype
            weights = _resample(weights[:, None].float(), grid, "bilinear")[:, 0].to(w_dtype)
    image = _intensity(image, params, config)
    return image, labels, weights


# ----------------------------------------------------------------------------------------
# Preview gallery (for the dock): N augmented samples of one slice + the deformed grid.


# ``done`` of ``total`` gallery samples made.
GalleryProgress = Done


@dataclass(frozen=True)
class Gallery:
    """``images`` (N, H, W) float32, ``labels`` (N, H, W) or None, ``grid_lines``: paths
    ``(K, 3)`` of (sample, y, x) showing where a regular source grid ends up."""

    images: np.ndarray
    labels: np.ndarray | None
    grid_lines: list[np.ndarray] = field(default_factory=list)


def deformed_grid_lines(source_px: np.ndarray, spacing_px: float) -> list[np.ndarray]:
    """Paths (K, 2) in output (y, x) of the source lines y = k*spacing and x = k*spacing.

    The image of a source line under the backward map ``source_px`` is exactly a level
    set of one of its components, so marching squares traces it for any transform.
    """
    from skimage.measure import find_contours

    height, width = source_px.shape[:2]
    paths: list[np.ndarray] = []
    for axis, size in ((0, height), (1, width)):
        component = source_px[..., axis].astype(np.float64)
        for level in np.arange(0.0, size, spacing_px):
            # Nudge the tile's edge lines inside: marching squares misses extreme levels.
            paths.extend(find_contours(component, np.clip(level, 1e-3, size - 1 - 1e-3)))
    return [p for p in paths if len(p) > 1]


def gallery(
    image: np.ndarray,
    labels: np.ndarray | None,
    n_samples: int,
    config: AugmentConfig,
    seed: int = 0,
    grid_spacing_px: float | None = None,
    percentiles: tuple[float, float] | None = PERCENTILES,
) -> Iterator[GalleryProgress]:
    """Generator: augment one 2D slice ``n_samples`` times; returns a :class:`Gallery`.

    ``image``: (Y, X), or (C, Y, X) for colour / several channels, which are deformed
    together as training does (samples then (N, C, Y, X)). The slice is first
    normalised like training data, each channel alone (``percentiles``; None keeps it
    as is) so intensity changes act in training units. Samples are made one by one so
    closing the generator stops early.
    """
    import torch

    image = np.asarray(image, dtype=np.float32)
    if image.ndim not in (2, 3):
        raise InputError(f"Gallery needs one 2D slice, (Y, X) or (C, Y, X); got {image.shape}")
    planes = image if image.ndim == 3 else image[None]
    if percentiles is not None:
        planes = np.stack([normalize(plane, percentiles) for plane in planes])
    height, width = planes.shape[-2:]
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (height, width):
            raise InputError(
                f"Labels have shape {labels.shape} but the image has {(height, width)}: "
                "pick a labels layer of the same shape."
            )
    if n_samples < 1:
        raise InputError(f"Number of samples must be at least 1; got {n_samples}")
    spacing = grid_spacing_px or max(height, width) / 8
    generator = torch.Generator().manual_seed(int(seed))
    image_t = torch.from_numpy(np.ascontiguousarray(planes))[None]
    labels_t = None if labels is None else torch.from_numpy(labels.astype(np.int64))[None]
    images, label_stack, lines = [], [], []
    for index in range(n_samples):
        state = generator.get_state()
        params = draw(1, height, width, config, generator)
        generator.set_state(state)  # replay the same draw inside augment
        out, out_labels, _ = augment(image_t, labels_t, None, config, generator)
        images.append(out[0].numpy() if image.ndim == 3 else out[0, 0].numpy())
        if out_labels is not None:
            label_stack.append(out_labels[0].numpy().astype(labels.dtype))
        source = params.source_px
        if source is None:  # identity: the grid stays regular
            ys, xs = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
            source_np = np.stack([ys, xs], -1).astype(np.float32)
        else:
            source_np = source[0].numpy()
        for path in deformed_grid_lines(source_np, spacing):
            lines.append(np.column_stack([np.full(len(path), index), path]))
        yield GalleryProgress(index + 1, n_samples)
    return Gallery(
        images=np.stack(images),
        labels=np.stack(label_stack) if label_stack else None,
        grid_lines=lines,
    )
