"""Weight maps: exact against a brute force, gaps split touching cells, class balance, CLI."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_unet.core import io, weights
from napari_unet.core.synthetic import touching_cells, touching_pairs


def brute_force_distances(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One full-image distance transform per cell, sorted per pixel: obviously right, slow."""
    ids = [i for i in np.unique(labels) if i != 0]
    stack = [ndi.distance_transform_edt(labels != i) for i in ids] + [
        np.full(labels.shape, np.inf),
        np.full(labels.shape, np.inf),
    ]
    d = np.sort(np.stack(stack), axis=0)
    return d[0], d[1]


def brute_force_border(labels: np.ndarray, w0: float, sigma: float) -> np.ndarray:
    d1, d2 = brute_force_distances(labels)
    term = w0 * np.exp(-((d1 + d2) ** 2) / (2 * sigma**2))
    return np.where(labels == 0, term, 0.0)


def random_labels(shape=(96, 80), n_seeds=40, seed=0) -> np.ndarray:
    """Voronoi-like blobs with background holes, 1-pixel cells and scattered ids."""
    rng = np.random.default_rng(seed)
    seeds = np.zeros(shape, dtype=np.int32)
    points = rng.integers(0, shape, size=(n_seeds, 2))
    seeds[points[:, 0], points[:, 1]] = np.arange(1, n_seeds + 1)
    _, (iy, ix) = ndi.distance_transform_edt(seeds == 0, return_indices=True)
    labels = seeds[iy, ix]
    labels[rng.random(shape) < 0.35] = 0  # ragged cells, many tiny pieces, gaps
    return (labels * 7).astype(np.uint16)  # non-contiguous ids


def _cases() -> dict[str, np.ndarray]:
    one_pixel = np.zeros((40, 50), np.uint8)
    one_pixel[[3, 20, 20, 39], [0, 10, 12, 49]] = [1, 2, 3, 4]  # at borders and corners
    at_borders = np.zeros((60, 60), np.uint16)
    at_borders[:10, :] = 1
    at_borders[50:, 30:] = 2
    at_borders[15:45, :5] = 3
    sparse_ids = np.zeros((50, 50), np.uint32)
    sparse_ids[5:15, 5:15] = 3
    sparse_ids[20:30, 10:40] = 2_000_000_000  # forces id compaction
    sparse_ids[31:40, 10:40] = 17
    single = np.zeros((30, 30), np.uint16)
    single[10:20, 5:9] = 5
    return {
        "synthetic": touching_cells((128, 128), seed=3)[1],
        "separated synthetic": weights.separate_touching(touching_cells((128, 128), seed=4)[1]),
        "random": random_labels(),
        "one-pixel cells": one_pixel,
        "cells at borders": at_borders,
        "non-contiguous ids": sparse_ids,
        "single cell": single,
        "no cells": np.zeros((20, 30), np.uint16),
        "all one cell": np.ones((10, 10), np.uint8),
    }


CASES = _cases()


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize(("w0", "sigma"), [(10.0, 5.0), (25.0, 9.0), (3.0, 1.5)])
def test_border_weights_equal_brute_force(name, w0, sigma):
    labels = CASES[name]
    fast = weights.border_weights(labels, w0=w0, sigma=sigma)
    assert fast.dtype == np.float32 and fast.shape == labels.shape
    np.testing.assert_allclose(fast, brute_force_border(labels, w0, sigma), rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", ["synthetic", "random", "cells at borders", "single cell"])
def test_distances_exact_up_to_max_distance(name):
    labels = CASES[name]
    limit = 12.5
    d1, d2 = weights.distances(labels, max_distance=limit)
    for fast, exact in zip((d1, d2), brute_force_distances(labels), strict=True):
        within = exact <= limit
        np.testing.assert_allclose(fast[within], exact[within], rtol=1e-6, atol=1e-5)
        assert np.all(np.isinf(fast[~within]))


def test_distances_without_limit_are_exact_everywhere():
    labels = CASES["random"]
    d1, d2 = weights.distances(labels)
    e1, e2 = brute_force_distances(labels)
    np.testing.assert_allclose(d1, e1, rtol=1e-6)
    np.testing.assert_allclose(d2, e2, rtol=1e-6)


def test_border_term_hand_worked():
    labels = np.zeros((11, 15), np.uint8)
    labels[5, 5] = 1
    labels[5, 9] = 2
    w = weights.border_weights(labels, w0=10, sigma=5)
    assert w[5, 7] == pytest.approx(10 * math.exp(-((2 + 2) ** 2) / 50), abs=1e-6)
    assert w[5, 5] == 0 and w[5, 9] == 0  # cells carry no border term
    assert w[5, 7] == w.max()  # the middle of the gap is the heaviest


def test_reach_bounds_the_error():
    w0, sigma = 10.0, 5.0
    reach = weights.reach_px(w0, sigma)
    assert w0 * math.exp(-(reach**2) / (2 * sigma**2)) == pytest.approx(weights.NEGLIGIBLE)
    assert weights.reach_px(0.0, sigma) == 0.0


def test_separation_splits_every_touching_pair():
    _, labels = touching_cells((256, 256), seed=5)
    assert len(touching_pairs(labels)) > 20  # the data really has touching cells
    original = labels.copy()
    separated = weights.separate_touching(labels)
    np.testing.assert_array_equal(labels, original)  # the input is left untouched
    assert separated.dtype == labels.dtype
    assert touching_pairs(separated) == set()
    assert np.all((separated == labels) | (separated == 0))  # only pixels removed
    n_cells = len(np.unique(labels)) - 1
    _, n_components = ndi.label(separated > 0, structure=np.ones((3, 3)))
    assert n_components == n_cells  # no cell lost, no cell cut in two
    assert set(np.unique(separated)) == set(np.unique(labels))


def test_separation_follows_its_definition_pixel_by_pixel():
    labels = random_labels((30, 26), n_seeds=25, seed=1)
    expected = labels.copy()
    h, w = labels.shape
    for y in range(h):
        for x in range(w):
            window = labels[max(y - 1, 0) : y + 2, max(x - 1, 0) : x + 2]
            if labels[y, x] and np.any((window != 0) & (window != labels[y, x])):
                expected[y, x] = 0
    np.testing.assert_array_equal(weights.separate_touching(labels), expected)


def test_separation_hand_worked_and_stack():
    labels = np.zeros((6, 8), np.uint16)
    labels[1:5, 1:4] = 1
    labels[1:5, 4:7] = 2
    separated = weights.separate_touching(labels)
    expected = labels.copy()
    expected[1:5, 3:5] = 0  # a two-pixel gap where the cells met
    np.testing.assert_array_equal(separated, expected)
    # In a stack, cells meeting only across slices are not cut.
    stack = np.stack([labels * 0 + 1, labels * 0 + 2])
    np.testing.assert_array_equal(weights.separate_touching(stack), stack)
    np.testing.assert_array_equal(
        weights.separate_touching(np.stack([labels, labels]))[1], expected
    )


def test_class_weights_balance_and_log():
    target = np.zeros((10, 10), np.uint16)
    target[:2] = 4  # 20 cell pixels, 80 background
    wc = weights.class_weights(target)
    cell, background = wc[target > 0], wc[target == 0]
    assert cell.sum() == pytest.approx(background.sum())  # both classes pull equally
    assert wc.mean() == pytest.approx(1.0)
    assert cell[0] / background[0] == pytest.approx(80 / 20)
    log = weights.class_weights(target, mode="log", max_weight=None)
    assert log[0, 0] == pytest.approx(1 / math.log(1.02 + 0.2))
    assert log[9, 9] == pytest.approx(1 / math.log(1.02 + 0.8))
    assert np.all(weights.class_weights(np.zeros((4, 4), np.uint8)) == 1.0)


def test_class_weights_are_capped_for_rare_cells():
    target = np.zeros((100, 100), np.uint16)
    target[:2, :5] = 1  # 10 cell pixels in 10 000: balance would give them 500
    wc = weights.class_weights(target)
    assert wc[0, 0] == weights.MAX_CLASS_WEIGHT
    assert wc[50, 50] == pytest.approx(10_000 / (2 * 9_990))  # the common class is untouched
    assert weights.class_weights(target, max_weight=None)[0, 0] == pytest.approx(500)
    wm = weights.weight_map(target, w0=0.0)
    assert wm.max() == pytest.approx(weights.MAX_CLASS_WEIGHT)
    assert weights.weight_map(target, w0=0.0, max_class_weight=50).max() == pytest.approx(50)


def test_class_weights_ignore_is_zero_and_not_counted():
    target = np.zeros((10, 10), np.uint16)
    target[:2] = 1
    ignore = np.zeros_like(target, dtype=bool)
    ignore[5:] = True  # 50 background pixels ignored: 20 cell vs 30 background counted
    wc = weights.class_weights(target, ignore=ignore)
    assert np.all(wc[ignore] == 0)
    assert wc[0, 0] == pytest.approx(50 / (2 * 20))
    assert wc[3, 0] == pytest.approx(50 / (2 * 30))


def test_weight_map_puts_the_heaviest_weights_in_gaps():
    labels = np.zeros((20, 24), np.uint16)
    labels[4:16, 2:12] = 1
    labels[4:16, 12:22] = 2  # touching along a vertical line
    wm = weights.weight_map(labels, balance=False)
    # Gap columns 11, 12: d1 = 1 to one cell, d2 = 2 to the other.
    assert wm[10, 11] == pytest.approx(1 + 10 * math.exp(-9 / 50), abs=1e-5)
    assert wm[10, 5] == pytest.approx(1.0)  # inside a cell: class weight only
    assert np.unravel_index(np.argmax(wm), wm.shape)[1] in (11, 12)
    ignore = np.zeros(labels.shape, bool)
    ignore[:, :12] = True
    wm_ignored = weights.weight_map(labels, ignore=ignore)
    assert np.all(wm_ignored[ignore] == 0) and np.all(wm_ignored[~ignore] > 0)


def test_weight_map_stack_progress_and_close():
    _, labels = touching_cells((64, 64), seed=6)
    stack = np.stack([labels, np.zeros_like(labels), labels[::-1]])
    events = weights.weight_maps_iter(stack, balance=False)
    seen = []
    try:
        while True:
            seen.append(next(events))
    except StopIteration as stop:
        maps = stop.value
    assert seen == [weights.SliceDone(i, 3) for i in (1, 2, 3)]
    assert maps.weights.shape == stack.shape
    for z in range(3):
        separated = weights.separate_touching(stack[z])
        np.testing.assert_array_equal(maps.target[z], separated)
        expected = 1 + brute_force_border(separated, weights.W0, weights.SIGMA_PX)
        np.testing.assert_allclose(maps.weights[z], expected, atol=1e-5)
    assert np.all(maps.d1 <= maps.reach_px) and np.isfinite(maps.d2).all()
    stopped = weights.weight_maps_iter(stack)
    next(stopped)
    stopped.close()  # stops between slices without error


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: weights.border_weights(np.ones((5, 5), np.float32)), "integer"),
        (lambda: weights.border_weights(np.ones((5, 5), np.int8), sigma=0), "sigma"),
        (lambda: weights.weight_map(np.ones((5, 5), np.int8), w0=-1), "w0"),
        (lambda: weights.weight_map(np.ones((5, 5), np.int8), ignore=np.ones((4, 4))), "ignore"),
        (lambda: weights.class_weights(np.ones((5, 5), np.int8), mode="median"), "mode"),
    ],
)
def test_bad_input_is_explained(call, message):
    with pytest.raises(io.InputError, match=message):
        call()


def test_cli_writes_the_weight_map(tmp_path):
    from napari_unet._cli import main

    _, labels = touching_cells((64, 64), seed=7)
    stack = np.stack([labels, labels.T])
    io.write(tmp_path / "labels.tif", stack)
    out = tmp_path / "w.tif"
    argv = [str(tmp_path / "labels.tif"), "-o", str(out), "--w0", "5", "--sigma", "3"]
    assert main(["weights", *argv, "--no-balance", "--target", str(tmp_path / "t.tif")]) == 0
    for z in range(2):
        separated = weights.separate_touching(stack[z])
        expected = 1 + brute_force_border(separated, 5.0, 3.0)
        np.testing.assert_allclose(io.read(out)[z], expected, atol=1e-5)
        np.testing.assert_array_equal(io.read(tmp_path / "t.tif")[z], separated)


def test_cli_refuses_float_labels(tmp_path, capsys):
    from napari_unet._cli import main

    io.write(tmp_path / "image.npy", np.random.default_rng(0).random((16, 16)))
    code = main(["weights", str(tmp_path / "image.npy"), "-o", str(tmp_path / "w.tif")])
    assert code == 2
    assert "labels must be an integer image" in capsys.readouterr().err
    assert not (tmp_path / "w.tif").exists()
