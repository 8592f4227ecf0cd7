"""Model + raw image/stack -> labels: normalisation from the model file, slice by slice,
results written as each slice finishes, lazy stacks read one slice at a time."""

from __future__ import annotations

import numpy as np
import pytest

from _threshold_model import threshold_unet
from napari_unet.core import checkpoint
from napari_unet.core.events import run_to_end as run
from napari_unet.core.io import InputError
from napari_unet.core.predict import (
    PredictConfig,
    Progress,
    SliceResult,
    predict_stack,
    stack_layout,
)

CONFIG = PredictConfig(tile_size=60, batch_size=2, device="cpu", min_size_px=4)
METADATA = {"normalisation": {"percentiles": [1.0, 99.8]}}


def _squares(seed: int, shape=(70, 90), n=5) -> tuple[np.ndarray, np.ndarray]:
    """Bright squares (raw intensity 900) on a dim background (100), 4+ px apart."""
    rng = np.random.default_rng(seed)
    image = np.full(shape, 100, np.uint16)
    labels = np.zeros(shape, np.uint16)
    placed = 0
    while placed < n:
        size = int(rng.integers(5, 12))
        y, x = (int(rng.integers(0, s - size)) for s in shape)
        if labels[max(0, y - 4) : y + size + 4, max(0, x - 4) : x + size + 4].any():
            continue
        placed += 1
        labels[y : y + size, x : x + size] = placed
        image[y : y + size, x : x + size] = 900
    return image, labels


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    return len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]


def test_image_to_labels_and_foreground():
    image, expected = _squares(0)
    events = list_events(
        predict_stack(threshold_unet(), METADATA, image, CONFIG, keep_foreground=True)
    )
    prediction = events.pop()
    assert _same_partition(prediction.labels, expected)
    assert prediction.labels.dtype == np.uint8 and prediction.labels.shape == image.shape
    assert prediction.foreground.dtype == np.float32
    np.testing.assert_array_equal(prediction.foreground > 0.5, expected > 0)
    assert isinstance(events[-1], SliceResult)
    ticks = [e.tiles_done for e in events if isinstance(e, Progress)]
    assert ticks == sorted(ticks) and ticks[-1] == events[0].tiles_total


def list_events(generator):
    """Every yielded event, then the return value as the last item."""
    out = []
    while True:
        try:
            out.append(next(generator))
        except StopIteration as stop:
            out.append(stop.value)
            return out


def test_normalisation_follows_the_model_file():
    image, labels = _squares(1)
    image[labels == 5] = 110  # a faint cell, just above the background (100)
    # Default percentiles (1, 99.8): background -> 0, bright cells -> 1, faint cell ~0.01.
    assert run(predict_stack(threshold_unet(), METADATA, image, CONFIG)).labels.max() == 4
    # A model trained with percentiles (1, 50) maps the faint cell far above 0.5.
    faint = {"normalisation": {"percentiles": [1.0, 50.0]}}
    assert run(predict_stack(threshold_unet(), faint, image, CONFIG)).labels.max() == 5


def test_stack_slice_by_slice_with_ids_unique_in_the_stack():
    pairs = [_squares(seed) for seed in (2, 3, 4)]
    stack = np.stack([p[0] for p in pairs])
    prediction = run(predict_stack(threshold_unet(), METADATA, stack, CONFIG))
    assert prediction.labels.shape == stack.shape
    for z, (_, expected) in enumerate(pairs):
        assert _same_partition(prediction.labels[z], expected)
    ids = [set(np.unique(plane)) - {0} for plane in prediction.labels]
    assert not (ids[0] & ids[1]) and not (ids[1] & ids[2])
    assert sum(len(i) for i in ids) == 15


class LazyStack:
    """A stack that can only be read slice by slice; reading it whole is an error."""

    def __init__(self, data: np.ndarray):
        self.data, self.shape, self.dtype, self.ndim = data, data.shape, data.dtype, data.ndim
        self.reads: list[int] = []

    def __getitem__(self, index):
        assert isinstance(index, int | np.integer), f"not a single slice: {index!r}"
        self.reads.append(int(index))
        return self.data[index]

    def __array__(self, *args, **kwargs):
        raise AssertionError("the whole lazy stack was loaded")


def test_lazy_stack_is_read_one_slice_at_a_time_and_results_are_written_per_slice():
    pairs = [_squares(seed) for seed in range(10, 22)]
    lazy = LazyStack(np.stack([p[0] for p in pairs]))
    out = np.zeros(lazy.shape, np.uint32)
    events = predict_stack(threshold_unet(), METADATA, lazy, CONFIG, slices=[3, 7], labels_out=out)
    finished = []
    for event in events:
        if isinstance(event, SliceResult):
            finished.append(event.slice_index)
            assert out[event.slice_index].any()  # written before the event arrives
            assert not out[7].any() or event.slice_index == 7
    assert finished == [3, 7]
    assert _same_partition(out[3], pairs[3][1]) and _same_partition(out[7], pairs[7][1])
    assert not np.delete(out, [3, 7], axis=0).any()
    # 8 evenly spaced slices for the intensity range, then the two predicted ones
    assert len(lazy.reads) == 8 + 2


def test_dask_stack_gives_the_same_labels_as_numpy():
    da = pytest.importorskip("dask.array")
    stack = np.stack([_squares(seed)[0] for seed in (5, 6)])
    lazy = da.from_array(stack, chunks=(1, *stack.shape[1:]))
    a = run(predict_stack(threshold_unet(), METADATA, lazy, CONFIG)).labels
    b = run(predict_stack(threshold_unet(), METADATA, stack, CONFIG)).labels
    np.testing.assert_array_equal(a, b)


def test_cancel_stops_before_the_next_slice():
    stack = np.stack([_squares(seed)[0] for seed in (7, 8)])
    out = np.zeros(stack.shape, np.uint32)
    events = predict_stack(threshold_unet(), METADATA, stack, CONFIG, labels_out=out)
    assert isinstance(next(events), Progress)
    events.close()
    assert not out.any()


def test_multichannel_model_reads_channels_last_or_first():
    image, expected = _squares(9)
    two = np.stack([image, np.zeros_like(image)], axis=-1)  # (Y, X, 2)
    net = threshold_unet(in_channels=2)
    last = run(predict_stack(net, METADATA, two, CONFIG)).labels
    first = run(predict_stack(net, METADATA, np.moveaxis(two, -1, 0), CONFIG)).labels
    assert _same_partition(last, expected)
    np.testing.assert_array_equal(first, last)


def test_loaded_checkpoint_predicts_like_the_saved_net(tmp_path):
    image, expected = _squares(11)
    path = checkpoint.save(tmp_path / "model.safetensors", threshold_unet(), METADATA)
    net, metadata = checkpoint.load(path)
    assert _same_partition(run(predict_stack(net, metadata, image, CONFIG)).labels, expected)


def test_bad_input_is_explained():
    net = threshold_unet()
    with pytest.raises(InputError, match="takes 1 channel but the image has 3"):
        run(predict_stack(net, METADATA, np.zeros((64, 64, 3)), CONFIG))
    with pytest.raises(InputError, match=r"2D image \(Y, X\) or a stack"):
        run(predict_stack(net, METADATA, np.zeros((2, 3, 64, 64)), CONFIG))
    with pytest.raises(InputError, match="no axis of that size"):
        stack_layout((64, 64, 5), channels=2)
    with pytest.raises(InputError, match="slice index out of range"):
        run(predict_stack(net, METADATA, np.zeros((2, 64, 64)), CONFIG, slices=[2]))
    with pytest.raises(InputError, match="NaN"):
        run(predict_stack(net, METADATA, np.full((64, 64), np.nan), CONFIG))


def test_cli_round_trip_on_a_tif_stack(tmp_path, capsys):
    from napari_unet._cli import main
    from napari_unet.core import io

    pairs = [_squares(seed) for seed in (12, 13)]
    io.write(tmp_path / "stack.tif", np.stack([p[0] for p in pairs]))
    model = checkpoint.save(tmp_path / "model.safetensors", threshold_unet(), METADATA)
    args = [str(model), str(tmp_path / "stack.tif"), "-o", str(tmp_path / "labels.tif")]
    extra = ["--tile-size", "60", "--batch-size", "2", "--device", "cpu", "--min-size", "4"]
    assert main(["predict", *args, *extra, "--probabilities", str(tmp_path / "p.tif")]) == 0
    labels, probability = io.read(tmp_path / "labels.tif"), io.read(tmp_path / "p.tif")
    assert labels.shape == probability.shape == (2, 70, 90)
    for z, (_, expected) in enumerate(pairs):
        assert _same_partition(labels[z], expected)
        np.testing.assert_array_equal(probability[z] > 0.5, expected > 0)


def test_cli_missing_model_exits_2_with_one_line(tmp_path, capsys):
    from napari_unet._cli import main
    from napari_unet.core import io

    io.write(tmp_path / "image.tif", np.zeros((32, 32), np.uint16))
    missing = str(tmp_path / "nope.safetensors")
    assert main(["predict", missing, str(tmp_path / "image.tif"), "-o", "x.tif"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nope.safetensors" in err
    assert not (tmp_path / "x.tif").exists()


def test_cli_splits_two_fused_disks_unless_told_not_to(tmp_path):
    from napari_unet._cli import main
    from napari_unet.core import io

    yy, xx = np.mgrid[:40, :60]
    disks = ((yy - 20) ** 2 + (xx - 18) ** 2 < 121) | ((yy - 20) ** 2 + (xx - 36) ** 2 < 121)
    io.write(tmp_path / "fused.tif", np.where(disks, 900, 100).astype(np.uint16))
    model = checkpoint.save(tmp_path / "model.safetensors", threshold_unet(), METADATA)
    base = [str(model), str(tmp_path / "fused.tif"), "--device", "cpu", "-o"]
    assert main(["predict", *base, str(tmp_path / "one.tif"), "--no-split-merged"]) == 0
    assert main(["predict", *base, str(tmp_path / "two.tif")]) == 0
    assert io.read(tmp_path / "one.tif").max() == 1
    assert io.read(tmp_path / "two.tif").max() == 2


def test_cli_averages_the_eight_flips_by_default_and_no_tta_predicts_once(tmp_path):
    """TTA is the default (it raised AP@0.5 on every real set measured); ``--no-tta``
    gives the single pass. A random, so not rotation-symmetric, model tells them apart."""
    import torch

    from napari_unet._cli import main
    from napari_unet.core import io, tiling
    from napari_unet.core.model import UNet
    from napari_unet.core.normalize import normalize

    torch.manual_seed(0)
    net = UNet(base_channels=2, depth=3, dropout=0.0).eval()
    image, _ = _squares(14)
    io.write(tmp_path / "cells.tif", image)
    model = checkpoint.save(tmp_path / "random.safetensors", net, METADATA)
    base = [str(model), str(tmp_path / "cells.tif"), "-o", str(tmp_path / "l.tif")]
    base += ["--device", "cpu", "--tile-size", "60", "--probabilities"]
    assert main(["predict", *base, str(tmp_path / "tta.tif")]) == 0
    assert main(["predict", *base, str(tmp_path / "once.tif"), "--no-tta"]) == 0
    x = normalize(image, (1.0, 99.8))
    for name, tta in (("tta.tif", True), ("once.tif", False)):
        expected = tiling.predict_tiled(net, x, tile_size=60, tta=tta)[1]
        np.testing.assert_allclose(io.read(tmp_path / name), expected, atol=1e-5)
    assert np.abs(io.read(tmp_path / "tta.tif") - io.read(tmp_path / "once.tif")).max() > 1e-3
