"""Augmentation: the elastic field has the paper's statistics, everything moves together.

Checks use independent computations: a numpy cubic-convolution interpolation, linear
coordinate ramps (bilinear resampling of a ramp is exact), scipy's Gaussian filter and
centre of mass, and brute-force enumeration of the 8 flips/turns.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from napari_unet.core.augment import (
    GRID,
    SIGMA_PX,
    AugmentConfig,
    augment,
    deformed_grid_lines,
    draw,
    elastic_field,
    gallery,
)
from napari_unet.core.events import run_to_end
from napari_unet.core.io import InputError


def _seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _ramps(batch: int, size: int) -> torch.Tensor:
    """Channel 0 holds each pixel's y, channel 1 its x."""
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    return torch.stack([ys, xs]).float()[None].repeat(batch, 1, 1, 1)


def _disk(size: int, centre: tuple[float, float], radius: float) -> np.ndarray:
    ys, xs = np.mgrid[:size, :size]
    return (ys - centre[0]) ** 2 + (xs - centre[1]) ** 2 <= radius**2


# --- elastic field --------------------------------------------------------------------


def test_paper_defaults():
    config = AugmentConfig()
    assert (GRID, SIGMA_PX) == (3, 10.0)
    assert config.elastic and config.grid == 3 and config.sigma_px == 10.0


@pytest.mark.parametrize(("grid", "sigma_px"), [(3, 10.0), (5, 4.0)])
def test_node_displacements_have_requested_sigma(grid, sigma_px):
    n, size = 400, 33
    field = elastic_field(n, size, size, grid, sigma_px, generator=_seeded(1)).numpy()
    nodes = np.round(np.linspace(0, size - 1, grid)).astype(int)
    values = field[:, nodes][:, :, nodes].ravel()  # n * grid * grid * 2 draws
    m = values.size
    # Sampling error of a Gaussian's std is sigma / sqrt(2m); allow 4 of them.
    assert abs(values.std() - sigma_px) < 4 * sigma_px / np.sqrt(2 * m)
    assert abs(values.mean()) < 4 * sigma_px / np.sqrt(m)


def _keys_weights(t: float, a: float = -0.75) -> np.ndarray:
    """Cubic convolution weights for the 4 nodes around offset t in [0, 1)."""

    def k(s):
        s = abs(s)
        if s <= 1:
            return (a + 2) * s**3 - (a + 3) * s**2 + 1
        if s < 2:
            return a * s**3 - 5 * a * s**2 + 8 * a * s - 4 * a
        return 0.0

    return np.array([k(t + 1), k(t), k(1 - t), k(2 - t)])


def test_dense_field_is_bicubic_interpolation_of_the_nodes():
    size, grid = 21, 3
    field = elastic_field(1, size, size, grid, 10.0, generator=_seeded(2))[0].numpy()
    nodes_at = np.linspace(0, size - 1, grid).astype(int)
    nodes = field[nodes_at][:, nodes_at]  # (grid, grid, 2): values at the nodes
    expected = np.zeros_like(field)
    for y in range(size):
        for x in range(size):
            gy, gx = y * (grid - 1) / (size - 1), x * (grid - 1) / (size - 1)
            iy, ix = int(np.floor(gy)), int(np.floor(gx))
            wy, wx = _keys_weights(gy - iy), _keys_weights(gx - ix)
            rows = np.clip(np.arange(iy - 1, iy + 3), 0, grid - 1)
            cols = np.clip(np.arange(ix - 1, ix + 3), 0, grid - 1)
            patch = nodes[rows][:, cols]
            expected[y, x] = np.einsum("i,j,ijc->c", wy, wx, patch)
    np.testing.assert_allclose(field, expected, atol=1e-4)


def test_applied_displacement_has_requested_sigma():
    # Bilinear resampling of a coordinate ramp returns the source coordinate exactly,
    # so the augmented ramp minus the pixel position is the displacement.
    n, size, sigma = 500, 33, 3.0
    out, _, _ = augment(
        _ramps(n, size),
        config=AugmentConfig.off(elastic=True, sigma_px=sigma),
        generator=_seeded(3),
    )
    centre = size // 2  # the middle node of the 3x3 grid
    shift = (out[:, :, centre, centre] - centre).numpy().ravel()
    assert abs(shift.std() - sigma) < 4 * sigma / np.sqrt(2 * shift.size)


def test_sigma_zero_is_exact_identity(cells_2d):
    image, labels = cells_2d
    image_t = torch.from_numpy(image)[None, None]
    labels_t = torch.from_numpy(labels.astype(np.int64))[None]
    weights_t = torch.rand(1, *labels.shape)
    config = AugmentConfig.off(elastic=True, sigma_px=0.0)
    out = augment(image_t, labels_t, weights_t, config, _seeded())
    assert torch.equal(out[0], image_t)
    assert torch.equal(out[1], labels_t)
    assert torch.equal(out[2], weights_t)
    assert torch.count_nonzero(elastic_field(2, 16, 16, sigma_px=0.0)) == 0


# --- image, labels and weights move together -------------------------------------------


def test_labels_keep_values_and_cells_stay_connected(cells_2d):
    image, labels = cells_2d
    size = labels.shape[0]
    batch = 4
    labels_t = torch.from_numpy(labels.astype(np.int64))[None].repeat(batch, 1, 1)
    image_t = torch.from_numpy(image)[None, None].repeat(batch, 1, 1, 1)
    _, out, _ = augment(image_t, labels_t, config=AugmentConfig(), generator=_seeded(4))
    out = out.numpy()
    assert set(np.unique(out)) <= set(np.unique(labels))
    # Away from the border no mirrored copy can appear, so each cell must be one piece.
    margin = 5 * SIGMA_PX
    boxes = ndi.find_objects(labels)
    inner = [
        i + 1
        for i, box in enumerate(boxes)
        if box is not None
        and min(box[0].start, box[1].start) > margin
        and max(box[0].stop, box[1].stop) < size - margin
    ]
    assert len(inner) > 5
    checked = 0
    for sample in out:
        for cell in inner:
            mask = sample == cell
            if mask.any():
                _, pieces = ndi.label(mask, structure=np.ones((3, 3)))
                assert pieces == 1, f"cell {cell} split into {pieces} pieces"
                checked += 1
    assert checked > 10


def test_image_and_labels_move_together():
    size = 96
    cell = _disk(size, (40, 55), 9)
    image = torch.from_numpy(cell.astype(np.float32))[None, None].repeat(6, 1, 1, 1)
    labels = torch.from_numpy(cell.astype(np.int64) * 7)[None].repeat(6, 1, 1)
    config = AugmentConfig(gain=(1, 1), offset=(0, 0), gamma=(1, 1), noise_std=0.0)
    config.blur_sigma_px = (0.0, 0.0)
    out_image, out_labels, out_weights = augment(
        image, labels, image[:, 0].clone(), config, _seeded(5)
    )
    moved = 0
    for i in range(6):
        from_image = np.array(ndi.center_of_mass(out_image[i, 0].numpy()))
        from_labels = np.array(ndi.center_of_mass(out_labels[i].numpy() == 7))
        from_weights = np.array(ndi.center_of_mass(out_weights[i].numpy()))
        assert np.abs(from_image - from_labels).max() < 0.75
        assert np.abs(from_image - from_weights).max() < 1e-3
        moved += np.abs(from_labels - (40, 55)).max() > 2
    assert moved >= 3  # the cell really went somewhere


def test_flips_and_quarter_turns_are_exact_pixel_permutations():
    size = 24
    labels = torch.arange(size * size).reshape(1, size, size).repeat(16, 1, 1)
    config = AugmentConfig.off(flips=True, rot90=True)
    _, out, _ = augment(labels[:, None].float(), labels, config=config, generator=_seeded(6))
    base = labels[0]
    candidates = [torch.rot90(b, k) for b in (base, base.flip(0)) for k in range(4)]
    seen = set()
    for sample in out:
        matches = [i for i, c in enumerate(candidates) if torch.equal(sample, c)]
        assert len(matches) == 1
        seen.add(matches[0])
    assert len(seen) >= 5  # different samples get different transforms


def test_non_square_tiles_never_get_quarter_turns():
    labels = torch.arange(8 * 12).reshape(1, 8, 12).repeat(8, 1, 1)
    config = AugmentConfig.off(rot90=True)
    _, out, _ = augment(labels[:, None].float(), labels, config=config, generator=_seeded(7))
    for sample in out:
        assert torch.equal(sample, labels[0]) or torch.equal(sample, labels[0].rot90(2))


def test_scale_zooms_in():
    size = 64
    disk = _disk(size, (31.5, 31.5), 6)
    labels = torch.from_numpy(disk.astype(np.int64))[None]
    config = AugmentConfig.off(scale=(2.0, 2.0))
    _, out, _ = augment(labels[:, None].float(), labels, config=config, generator=_seeded())
    assert out.sum().item() == pytest.approx(4 * disk.sum(), rel=0.1)


def test_small_rotation_stays_within_range():
    size, radius_px, max_deg = 65, 20, 30.0
    spot = _disk(size, (32, 32 + radius_px), 3).astype(np.float32)
    image = torch.from_numpy(spot)[None, None].repeat(64, 1, 1, 1)
    config = AugmentConfig.off(rotate_deg=max_deg)
    out, _, _ = augment(image, config=config, generator=_seeded(8))
    angles = []
    for sample in out[:, 0].numpy():
        y, x = ndi.center_of_mass(sample)
        assert np.hypot(y - 32, x - 32) == pytest.approx(radius_px, abs=0.5)
        angles.append(np.degrees(np.arctan2(y - 32, x - 32)))
    assert np.abs(angles).max() <= max_deg + 1
    assert np.std(angles) > max_deg / 4  # spread over the range, not all the same


# --- mirror filling, seeds, batches -----------------------------------------------------


def test_outside_areas_are_mirrored_not_zero():
    size = 48
    ones = torch.ones(4, 1, size, size)
    labels = torch.full((4, size, size), 3, dtype=torch.int64)
    config = AugmentConfig.off(elastic=True, sigma_px=25.0, rotate_deg=45.0, scale=(0.6, 0.7))
    out, out_labels, out_weights = augment(ones, labels, ones[:, 0], config, _seeded(9))
    torch.testing.assert_close(out, ones)
    torch.testing.assert_close(out_weights, ones[:, 0])
    assert torch.all(out_labels == 3)


def test_same_seed_same_result_other_seed_differs(cells_2d):
    image, labels = cells_2d
    image_t = torch.from_numpy(image[:96, :96].copy())[None, None].repeat(2, 1, 1, 1)
    labels_t = torch.from_numpy(labels[:96, :96].astype(np.int64))[None].repeat(2, 1, 1)
    first = augment(image_t, labels_t, None, AugmentConfig(), _seeded(42))
    again = augment(image_t, labels_t, None, AugmentConfig(), _seeded(42))
    other = augment(image_t, labels_t, None, AugmentConfig(), _seeded(43))
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[0], other[0])


def test_batch_gets_per_sample_transforms_and_keeps_dtypes():
    image = _ramps(5, 32)[:, :1].to(torch.float64)
    labels = torch.randint(0, 9, (5, 32, 32), dtype=torch.int16)
    weights = torch.rand(5, 32, 32)
    out = augment(image, labels, weights, AugmentConfig(), _seeded(10))
    assert [t.shape for t in out] == [image.shape, labels.shape, weights.shape]
    assert [t.dtype for t in out] == [torch.float64, torch.int16, torch.float32]
    assert len({tuple(sample.flatten()[:50].tolist()) for sample in out[0]}) == 5


def test_large_label_ids_survive_exactly():
    big = 2**40 + torch.arange(4).reshape(1, 2, 2).repeat_interleave(8, 1).repeat_interleave(8, 2)
    _, out, _ = augment(torch.rand(1, 1, 16, 16), big, config=AugmentConfig(), generator=_seeded())
    assert set(out.unique().tolist()) <= set(big.unique().tolist())


# --- intensity ---------------------------------------------------------------------------


def test_gain_offset_and_gamma_match_hand_computation():
    image = torch.linspace(0, 1, 64).reshape(1, 1, 8, 8)
    out, _, _ = augment(image, config=AugmentConfig.off(gain=(2, 2), offset=(0.5, 0.5)))
    torch.testing.assert_close(out, image * 2 + 0.5)
    out, _, _ = augment(image, config=AugmentConfig.off(gamma=(2, 2)))
    torch.testing.assert_close(out, image**2)
    shifted = image * 3 - 1  # gamma works on the sample's own range, keeps it
    out, _, _ = augment(shifted, config=AugmentConfig.off(gamma=(0.5, 0.5)))
    torch.testing.assert_close(out, ((shifted + 1) / 3) ** 0.5 * 3 - 1)


def test_blur_matches_scipy_gaussian_filter():
    image = torch.rand(2, 1, 20, 24)
    out, labels, _ = augment(
        image,
        torch.zeros(2, 20, 24, dtype=torch.int64),
        config=AugmentConfig.off(blur_sigma_px=(1.5, 1.5)),
    )
    expected = ndi.gaussian_filter(image.numpy(), (0, 0, 1.5, 1.5), mode="mirror", truncate=3.0)
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-5)
    assert torch.count_nonzero(labels) == 0  # intensity never touches labels


def test_noise_std_within_requested_range():
    image = torch.zeros(64, 1, 32, 32)
    out, _, _ = augment(image, config=AugmentConfig.off(noise_std=0.1), generator=_seeded(11))
    stds = out.std(dim=(1, 2, 3)).numpy()
    assert stds.max() < 0.1 * 1.1 and stds.min() >= 0
    assert stds.std() > 0.01  # per-sample strength
    assert abs(out.mean().item()) < 0.01


def test_switching_one_augmentation_off_keeps_the_others():
    shape = (2, 16, 16)
    one = draw(*shape, AugmentConfig(), _seeded(12))
    two = draw(*shape, AugmentConfig(noise_std=0.0, gain=(1, 1)), _seeded(12))
    assert torch.equal(one.source_px, two.source_px)
    assert torch.equal(one.gamma, two.gamma)


# --- errors ------------------------------------------------------------------------------


def test_bad_inputs_give_clear_errors():
    image = torch.rand(2, 1, 16, 16)
    with pytest.raises(InputError, match="integer tensor"):
        augment(image, torch.rand(2, 16, 16))
    with pytest.raises(InputError, match=r"labels must have shape \(B, H, W\)"):
        augment(image, torch.zeros(2, 8, 8, dtype=torch.int64))
    with pytest.raises(InputError, match="float tensor"):
        augment(torch.zeros(2, 16, 16))
    with pytest.raises(InputError, match="at least 2 nodes"):
        augment(image, config=AugmentConfig(grid=1))
    with pytest.raises(InputError, match="low 1.5 is above high 0.5"):
        augment(image, config=AugmentConfig(gain=(1.5, 0.5)))


# --- preview gallery ---------------------------------------------------------------------


def test_grid_lines_of_identity_and_flip_are_where_expected():
    size, spacing = 17, 8.0
    ys, xs = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    identity = np.stack([ys, xs], -1).astype(float)
    lines = deformed_grid_lines(identity, spacing)
    rows = sorted({round(p[0, 0], 2) for p in lines if np.ptp(p[:, 0]) == 0})
    cols = sorted({round(p[0, 1], 2) for p in lines if np.ptp(p[:, 1]) == 0})
    assert rows == cols == [0.0, 8.0, 16.0]
    flipped = identity[::-1]  # output row r samples source row 16 - r
    lines = deformed_grid_lines(flipped, spacing)
    horizontal = [p for p in lines if np.ptp(p[:, 0]) == 0]
    assert sorted({round(p[0, 0], 2) for p in horizontal}) == [0.0, 8.0, 16.0]
    # Source row 0 is now the bottom row: the level just inside it lies next to row 16.
    nudged = [p for p in horizontal if abs(p[0, 0] - 16) < 0.01]
    assert nudged and all(p[0, 0] <= 16 for p in nudged)


def test_gallery_makes_n_samples_and_can_be_stopped(cells_2d):
    image, labels = cells_2d
    job = gallery(image[:64, :64], labels[:64, :64], 3, AugmentConfig(), seed=1)
    events = []
    try:
        while True:
            events.append(next(job))
    except StopIteration as stop:
        result = stop.value
    assert [e.done for e in events] == [1, 2, 3]
    assert result.images.shape == result.labels.shape == (3, 64, 64)
    assert result.labels.dtype == labels.dtype
    assert {int(p[0, 0]) for p in result.grid_lines} == {0, 1, 2}
    job = gallery(image[:64, :64], labels[:64, :64], 1, AugmentConfig.off())
    with pytest.raises(StopIteration) as stop:
        next(job), next(job)
    low, high = np.percentile(image[:64, :64], (1.0, 99.8))  # training normalisation
    np.testing.assert_allclose(
        stop.value.value.images[0], (image[:64, :64] - low) / (high - low), atol=1e-5
    )
    np.testing.assert_array_equal(stop.value.value.labels[0], labels[:64, :64])
    job = gallery(image[:64, :64], None, 5, AugmentConfig())
    next(job)
    job.close()  # stops cleanly after the first sample
    with pytest.raises(InputError, match="same shape"):
        next(gallery(image[:64, :64], labels[:32, :32], 2, AugmentConfig()))


def test_gallery_of_a_colour_slice_deforms_its_channels_together(cells_2d):
    """(C, Y, X): one deformation for all channels (the same shift as the labels), each
    channel normalised alone as training does."""
    image, labels = cells_2d
    gray = image[:64, :64]
    colour = np.stack([gray, 10.0 * gray + 5.0, gray.max() - gray])  # R, G, B as in a stain
    flips = AugmentConfig.off()
    result = run_to_end(gallery(colour, labels[:64, :64], 1, flips))
    assert result.images.shape == (1, 3, 64, 64)
    low, high = np.percentile(gray, (1.0, 99.8))
    plain = (gray - low) / (high - low)
    np.testing.assert_allclose(result.images[0, 0], plain, atol=1e-5)
    np.testing.assert_allclose(result.images[0, 1], plain, atol=1e-5)  # gain/offset undone
    geometry = AugmentConfig.off(elastic=True, flips=True, rot90=True, rotate_deg=10.0)
    elastic = run_to_end(gallery(colour, labels[:64, :64], 2, geometry, seed=3))
    r, g, b = elastic.images[1]
    np.testing.assert_allclose(r, g, atol=1e-4)  # moved together, not one by one
    cells = elastic.labels[1] > 0
    assert r[cells].mean() > r[~cells].mean() and b[cells].mean() < b[~cells].mean()
    with pytest.raises(InputError, match="2D slice"):
        next(gallery(colour[None], None, 1, flips))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_cpu_for_the_same_seed(cells_2d):
    image, labels = cells_2d
    image_t = torch.from_numpy(image)[None, None].repeat(3, 1, 1, 1)
    labels_t = torch.from_numpy(labels.astype(np.int64))[None].repeat(3, 1, 1)
    config = AugmentConfig(noise_std=0.0)
    cpu = augment(image_t, labels_t, None, config, _seeded(13))
    gpu = augment(image_t.cuda(), labels_t.cuda(), None, config, _seeded(13))
    assert gpu[0].device.type == "cuda" and gpu[1].device.type == "cuda"
    torch.testing.assert_close(gpu[0].cpu(), cpu[0], atol=1e-3, rtol=1e-3)
    assert (gpu[1].cpu() != cpu[1]).float().mean() < 1e-3  # rounding at label borders
