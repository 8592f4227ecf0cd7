"""Synthetic fluorescence-like images of *touching* cells with exact instance labels.

Used as napari sample data, by the tests and by the benchmarks, so everything runs
offline. Deterministic for a given seed. Not a simulator of any real microscope.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

# Z step of a synthetic stack relative to the pixel size (cells look flatter along Z).
Z_SCALE = 0.4


def touching_cells(
    shape: tuple[int, int] = (512, 512),
    n_cells: int | None = None,
    radius_px: tuple[float, float] = (9.0, 20.0),
    seed: int = 0,
    noise: float = 0.04,
) -> tuple[np.ndarray, np.ndarray]:
    """A 2D image of cells, many of them touching, and its instance labels.

    Returns ``(image, labels)``: ``image`` float32 in roughly [0, 1] (blurred, noisy,
    uneven background), ``labels`` uint16 with 0 = background and ids 1..n.
    ``n_cells`` defaults to a density where most cells touch a neighbour.
    """
    if len(shape) != 2:
        raise ValueError(f"touching_cells makes 2D images; got shape {shape}")
    return _cells(tuple(shape), n_cells, radius_px, seed, noise)


def touching_cells_3d(
    shape: tuple[int, int, int] = (16, 256, 256),
    n_cells: int | None = None,
    radius_px: tuple[float, float] = (9.0, 18.0),
    seed: int = 0,
    noise: float = 0.04,
) -> tuple[np.ndarray, np.ndarray]:
    """A (Z, Y, X) stack of ellipsoidal touching cells; ids are unique in the stack."""
    if len(shape) != 3:
        raise ValueError(f"touching_cells_3d makes (Z, Y, X) stacks; got shape {shape}")
    return _cells(tuple(shape), n_cells, radius_px, seed, noise)


def touching_pairs(labels: np.ndarray) -> set[tuple[int, int]]:
    """Pairs ``(a, b)`` with ``a < b`` of labels that touch (8-connectivity in 2D).

    For a stack, pairs are collected slice by slice over the last two axes.
    """
    labels = np.asarray(labels)
    if labels.ndim > 2:
        pairs: set[tuple[int, int]] = set()
        for plane in labels.reshape(-1, *labels.shape[-2:]):
            pairs |= touching_pairs(plane)
        return pairs
    pairs = set()
    h, w = labels.shape
    # Compare every pixel with its right, down, down-right and down-left neighbour.
    offsets = [(0, 1), (1, 0), (1, 1), (1, -1)]
    for dy, dx in offsets:
        a = labels[: h - dy, max(0, -dx) : w - max(0, dx)]
        b = labels[dy:, max(0, dx) : w - max(0, -dx) if dx < 0 else w]
        b = b[:, : a.shape[1]]
        m = (a != b) & (a > 0) & (b > 0)
        if m.any():
            lo = np.minimum(a[m], b[m]).astype(np.int64)
            hi = np.maximum(a[m], b[m]).astype(np.int64)
            pairs |= set(zip(lo.tolist(), hi.tolist(), strict=True))
    return pairs


def hard_nuclei(
    shape: tuple[int, int] = (256, 256),
    radius_px: tuple[float, float] = (4.0, 15.0),
    seed: int = 0,
    photons: float = 40.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Small dense nuclei as the real DSB2018 fluorescence images show them: 8-30 px
    across, packed so that most touch, flat-topped so that contacts have no intensity
    dip, a 5x brightness spread, an uneven background, blur and Poisson (shot) noise
    with ``photons`` counts at the brightest nucleus. Same return as `touching_cells`.
    """
    if len(shape) != 2:
        raise ValueError(f"hard_nuclei makes 2D images; got shape {shape}")
    rng = np.random.default_rng(seed)
    mean_r = 0.5 * sum(radius_px)
    n_cells = max(1, int(0.9 * np.prod(shape) / (np.pi * mean_r**2)))
    labels, _ = _geometry(rng, tuple(shape), n_cells, radius_px)
    brightness = np.concatenate([[0.0], rng.uniform(0.2, 1.0, int(labels.max()))])
    image = brightness[labels].astype(np.float32)  # flat: no dip where nuclei touch
    image = ndi.gaussian_filter(image, 1.5)
    background = 0.1 + _smooth_noise(rng, labels.shape, sigma=40.0, amplitude=0.08)
    expected = np.clip(image + background, 0, None) * photons
    return (rng.poisson(expected) / photons).astype(np.float32), labels


def _cells(shape, n_cells, radius_px, seed, noise):
    rng = np.random.default_rng(seed)
    if n_cells is None:
        mean_r = 0.5 * sum(radius_px)
        ndim = len(shape)
        cell_volume = np.pi * mean_r**2 if ndim == 2 else 4 / 3 * np.pi * mean_r**3 * Z_SCALE
        n_cells = max(1, int(0.75 * np.prod(np.array(shape, dtype=float)) / cell_volume))
    labels, best = _geometry(rng, shape, n_cells, radius_px)
    return _render(rng, labels, best, noise), labels


def _geometry(rng, shape, n_cells, radius_px):
    """(labels, normalised distance of each pixel to its cell's centre)."""
    ndim = len(shape)
    r_min, r_max = radius_px
    # Cells are ellipses/ellipsoids whose normalised distance field is warped by a smooth
    # random field; each pixel goes to the cell with the smallest distance below 1, so
    # overlapping cells meet along a curved border and touch.
    size = np.array(shape, dtype=float)
    # Stacks are sampled more coarsely along Z than in the plane, as on a microscope.
    anisotropy = np.ones(ndim) if ndim == 2 else np.array([Z_SCALE, 1.0, 1.0])
    centers, radii = _place(rng, size / anisotropy, n_cells, r_min, r_max)
    centers = centers * anisotropy
    best = np.full(shape, np.inf, dtype=np.float32)
    labels = np.zeros(shape, dtype=np.uint16)
    wobble = _smooth_noise(rng, shape, sigma=6.0, amplitude=0.18)
    for i, (c, r) in enumerate(zip(centers, radii, strict=True), start=1):
        axes = r * rng.uniform(0.7, 1.3, size=ndim) * anisotropy
        rot = _random_rotation(rng, ndim)
        reach = axes.max() * 1.3
        lo = np.maximum(np.floor(c - reach).astype(int), 0)
        hi = np.minimum(np.ceil(c + reach).astype(int) + 1, np.array(shape))
        if np.any(hi <= lo):
            continue
        box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
        grid = np.stack(
            np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi, strict=True)], indexing="ij"),
            axis=-1,
        ).astype(np.float32)
        local = (grid - c) @ rot.T / axes
        dist = np.sqrt((local**2).sum(-1)) + wobble[box]
        win = (dist < 1.0) & (dist < best[box])
        best[box][win] = dist[win]
        labels[box][win] = i
    return _relabel_largest_piece(labels), best


def _place(rng, size, n, r_min, r_max):
    """Centres packed so that neighbours overlap a little (touch) but rarely swallow."""
    centers: list[np.ndarray] = []
    radii: list[float] = []
    tries = 0
    while len(centers) < n and tries < 200 * n:
        tries += 1
        r = rng.uniform(r_min, r_max)
        c = rng.uniform(0, size)
        if centers:
            d = np.linalg.norm(np.asarray(centers) - c, axis=1)
            if np.any(d < 0.85 * (np.asarray(radii) + r)):
                continue
        centers.append(c)
        radii.append(r)
    return np.asarray(centers), np.asarray(radii)


def _random_rotation(rng, ndim):
    """A rotation in the image plane (about Z for a stack, so cells stay flat along Z)."""
    angle = rng.uniform(0, np.pi)
    c, s = np.cos(angle), np.sin(angle)
    rot = np.eye(ndim, dtype=np.float32)
    rot[-2:, -2:] = [[c, -s], [s, c]]
    return rot


def _smooth_noise(rng, shape, sigma, amplitude):
    field = ndi.gaussian_filter(rng.normal(size=shape).astype(np.float32), sigma)
    field /= np.abs(field).max() + 1e-8
    return (amplitude * field).astype(np.float32)


def _relabel_largest_piece(labels):
    """Keep one connected piece per cell (the largest) and number cells 1..n."""
    out = np.zeros_like(labels)
    objects = ndi.find_objects(labels)
    next_id = 1
    for i, sl in enumerate(objects, start=1):
        if sl is None:
            continue
        mask = labels[sl] == i
        pieces, n = ndi.label(mask)
        if n > 1:
            sizes = np.bincount(pieces.ravel())[1:]
            mask = pieces == (np.argmax(sizes) + 1)
        if mask.sum() < 12:
            continue
        out[sl][mask] = next_id
        next_id += 1
    return out


def _render(rng, labels, dist, noise):
    """Bright cytoplasm that dims towards the cell border, blur, uneven background."""
    n = int(labels.max())
    brightness = np.concatenate([[0.0], rng.uniform(0.45, 1.0, size=n)]).astype(np.float32)
    inside = labels > 0
    profile = np.where(inside, 1.0 - 0.55 * np.clip(dist, 0, 1) ** 3, 0.0).astype(np.float32)
    texture = 1.0 + _smooth_noise(rng, labels.shape, sigma=1.5, amplitude=0.15)
    image = brightness[labels] * profile * texture
    image = ndi.gaussian_filter(image, 1.2)
    ramp = np.meshgrid(
        *[np.linspace(0, 1, s, dtype=np.float32) for s in labels.shape], indexing="ij"
    )
    background = 0.08 + 0.12 * ramp[-1] + 0.06 * ramp[-2]
    image = image + background + rng.normal(0, noise, size=labels.shape).astype(np.float32)
    return np.clip(image, 0, None).astype(np.float32)


def nuclei_and_membrane(
    shape: tuple[int, int] = (256, 256), seed: int = 0, noise: float = 0.04
) -> tuple[np.ndarray, np.ndarray]:
    """A two-channel (2, Y, X) image of the same touching cells: channel 0 a nucleus in
    each cell's core, channel 1 its membrane (cell borders); labels are the whole cells."""
    from skimage.segmentation import find_boundaries

    _, labels = touching_cells(shape, seed=seed, noise=noise)
    rng = np.random.default_rng(seed + 1)
    ids = np.arange(1, int(labels.max()) + 1)
    depth = ndi.distance_transform_edt(find_boundaries(labels, mode="inner") == 0) * (labels > 0)
    deepest = np.concatenate([[1.0], ndi.maximum(depth, labels, ids)])
    core = (labels > 0) & (depth > 0.45 * deepest[labels])
    brightness = np.concatenate([[0.0], rng.uniform(0.5, 1.0, size=len(ids))])
    nuclei = ndi.gaussian_filter(core * brightness[labels], 1.0)
    membrane = ndi.gaussian_filter(find_boundaries(labels, mode="thick").astype(np.float32), 1.0)
    image = np.stack([nuclei, 0.8 * membrane]) + 0.05
    image = image + rng.normal(0, noise, size=image.shape)
    return np.clip(image, 0, None).astype(np.float32), labels
