"""Overlap-tile prediction: seamless (== one pass over the mirror-padded image), mirrored
borders, out-of-memory fallback, test-time augmentation, cancellation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.signal import correlate2d

from napari_unet.core import tiling
from napari_unet.core.io import InputError
from napari_unet.core.model import UNet, nearest_valid_input_size


def _unet(depth=3, padding="valid", seed=0, in_channels=1):
    torch.manual_seed(seed)
    return UNet(in_channels=in_channels, base_channels=4, depth=depth, padding=padding).eval()


class CorrelationProbe(UNet):
    """A depth-2 'U-Net' (margin 8 px) whose class-1 logit is a plain valid correlation of
    the input with an asymmetric 17x17 kernel, so its output can be computed by hand."""

    def __init__(self, kernel: np.ndarray):
        super().__init__(base_channels=1, depth=2, padding="valid", dropout=0.0)
        self.kernel = torch.from_numpy(kernel.astype(np.float32))[None, None]
        self.batches: list[tuple[int, ...]] = []

    def forward(self, x):
        self.output_size(x.shape[-2])  # the real size checks: refuse tiles a U-Net refuses
        self.output_size(x.shape[-1])
        self.batches.append(tuple(x.shape))
        logit = F.conv2d(x, self.kernel)
        return torch.cat([torch.zeros_like(logit), logit], dim=1)


def _mirror_by_hand(image: np.ndarray, pad: int) -> np.ndarray:
    """Mirror about the edge pixel (edge not repeated): index -j -> j, n-1+j -> n-1-j."""
    h, w = image.shape

    def index(i, n):
        return -i if i < 0 else (2 * (n - 1) - i if i >= n else i)

    rows = [index(i, h) for i in range(-pad, h + pad)]
    cols = [index(j, w) for j in range(-pad, w + pad)]
    return image[np.ix_(rows, cols)]


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


@pytest.fixture
def kernel():
    return np.random.default_rng(3).normal(0, 0.05, size=(17, 17))


def test_mirror_by_hand_helper_matches_a_worked_example():
    image = np.arange(16.0).reshape(4, 4)
    padded = _mirror_by_hand(image, 2)
    assert padded[2].tolist() == [2, 1, 0, 1, 2, 3, 2, 1]
    assert padded[:, 2].tolist() == [8, 4, 0, 4, 8, 12, 8, 4]


@pytest.mark.parametrize("tile_size", [36, 60, 200])
def test_stitched_tiles_equal_a_hand_made_mirror_padded_correlation(kernel, tile_size):
    image = np.random.default_rng(0).random((45, 61)).astype(np.float32)
    probe = CorrelationProbe(kernel)
    probs = tiling.predict_tiled(probe, image, tile_size=tile_size, batch_size=3)
    expected = _sigmoid(correlate2d(_mirror_by_hand(image.astype(np.float64), 8), kernel, "valid"))
    assert probs.shape == (2, 45, 61) and probs.dtype == np.float32
    np.testing.assert_allclose(probs[1], expected, atol=1e-5)
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-6)
    if tile_size == 36:  # 36 px in -> 20 px out: 3 x 4 tiles in batches of 3
        assert [b[0] for b in probe.batches] == [3, 3, 3, 3]


def _whole_padded_pass(net, image):
    """Reference: mirror-pad by the margin (plus up to a valid size), one forward, crop."""
    depth, margin = net.config["depth"], tiling.margin_px(net)
    step = 2 ** (depth - 1)
    pads = []
    for n in image.shape[-2:]:
        size = nearest_valid_input_size(n + 2 * margin, depth)
        if net.config["padding"] == "same":
            size = step * -(-(n + 2 * margin) // step)
        while net.output_size(size) - (0 if net.config["padding"] == "valid" else 2 * margin) < n:
            size += step
        pads.append((margin, size - margin - n))
    padded = np.pad(image, [(0, 0)] * (image.ndim - 2) + pads, mode="reflect")
    x = torch.from_numpy(padded).reshape(1, -1, *padded.shape[-2:])
    with torch.no_grad():
        probs = torch.softmax(net(x), dim=1)[0].numpy()
    crop = 0 if net.config["padding"] == "valid" else margin
    return probs[:, crop : crop + image.shape[-2], crop : crop + image.shape[-1]]


@pytest.mark.slow
@pytest.mark.parametrize(("depth", "tile_size"), [(3, 92), (3, 156), (3, 1000), (4, 188)])
def test_valid_model_tiled_equals_one_pass_over_the_whole_padded_image(depth, tile_size):
    net = _unet(depth)
    image = np.random.default_rng(1).random((300, 517)).astype(np.float32)
    probs = tiling.predict_tiled(net, image, tile_size=tile_size, batch_size=4)
    np.testing.assert_allclose(probs, _whole_padded_pass(net, image), atol=2e-5)


def test_image_smaller_than_one_tile():
    net = _unet(3)
    image = np.random.default_rng(2).random((23, 9)).astype(np.float32)
    probs = tiling.predict_tiled(net, image, tile_size=572)
    assert probs.shape == (2, 23, 9)
    np.testing.assert_allclose(probs, _whole_padded_pass(net, image), atol=2e-5)


@pytest.mark.slow
def test_same_padding_model_has_no_seams():
    net = _unet(3, padding="same")
    image = np.random.default_rng(4).random((130, 170)).astype(np.float32)
    reference = _whole_padded_pass(net, image)
    for tile_size in (64, 100):
        probs = tiling.predict_tiled(net, image, tile_size=tile_size, batch_size=2)
        assert tiling.count_tiles(net, image.shape, tile_size) > 4
        np.testing.assert_allclose(probs, reference, atol=1e-5)


def test_multichannel_image_and_channel_mismatch():
    net = _unet(2, in_channels=2)
    image = np.random.default_rng(5).random((2, 40, 50)).astype(np.float32)
    probs = tiling.predict_tiled(net, image, tile_size=40)
    np.testing.assert_allclose(probs, _whole_padded_pass(net, image), atol=2e-5)
    with pytest.raises(InputError, match="expects 2 input channel"):
        tiling.predict_tiled(net, image[0], tile_size=40)
    with pytest.raises(InputError, match=r"\(Y, X\) or \(C, Y, X\)"):
        tiling.predict_tiled(net, image[None], tile_size=40)


class OutOfMemoryAbove(CorrelationProbe):
    """Raises like a full GPU when a batch holds more than ``max_pixels`` input pixels."""

    def __init__(self, kernel, max_pixels, error):
        super().__init__(kernel)
        self.max_pixels = max_pixels
        self.error = error

    def forward(self, x):
        if x.numel() > self.max_pixels:
            self.batches.append(("oom", *x.shape))
            raise self.error
        return super().forward(x)


@pytest.mark.parametrize(
    "error",
    [
        torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"),
        RuntimeError("CUDA out of memory."),
    ],
)
def test_out_of_memory_halves_batch_then_tile_and_still_gives_the_exact_result(kernel, error):
    image = np.random.default_rng(6).random((150, 170)).astype(np.float32)
    net = OutOfMemoryAbove(kernel, max_pixels=70 * 70, error=error)
    probs = tiling.predict_tiled(net, image, tile_size=140, batch_size=4)
    expected = _sigmoid(correlate2d(_mirror_by_hand(image.astype(np.float64), 8), kernel, "valid"))
    np.testing.assert_allclose(probs[1], expected, atol=1e-5)
    ooms = [b for b in net.batches if b[0] == "oom"]
    ok = [b for b in net.batches if b[0] != "oom"]
    assert ooms, "the simulated out-of-memory never triggered"
    assert [b[0] for b in ooms] == ["oom"] * 3  # batch 4 -> 2 -> 1, then the tile halves
    assert ok and all(b[0] == 1 and max(b[2:]) <= 70 for b in ok)


def test_other_errors_are_not_swallowed(kernel):
    net = OutOfMemoryAbove(kernel, max_pixels=0, error=RuntimeError("shape mismatch"))
    with pytest.raises(RuntimeError, match="shape mismatch"):
        tiling.predict_tiled(net, np.zeros((30, 30), np.float32), tile_size=36)


def test_out_of_memory_on_the_smallest_tile_is_a_clear_error(kernel):
    net = OutOfMemoryAbove(kernel, max_pixels=0, error=torch.cuda.OutOfMemoryError("oom"))
    with pytest.raises(InputError, match="Out of memory"):
        tiling.predict_tiled(net, np.zeros((30, 30), np.float32), tile_size=36)


def test_tta_averages_the_eight_flips_and_rotations(kernel):
    image = np.random.default_rng(7).random((40, 52)).astype(np.float32)
    probs = tiling.predict_tiled(CorrelationProbe(kernel), image, tile_size=36, tta=True)
    padded = _mirror_by_hand(image.astype(np.float64), 8)
    variants = [np.rot90(k, j) for k in (kernel, kernel[:, ::-1]) for j in range(4)]
    expected = np.mean([_sigmoid(correlate2d(padded, v, "valid")) for v in variants], axis=0)
    np.testing.assert_allclose(probs[1], expected, atol=1e-5)


def test_progress_events_and_cancel_between_batches(kernel):
    net = CorrelationProbe(kernel).train()
    events = tiling.predict_tiled_iter(net, np.zeros((60, 60), np.float32), 36, 2)
    first = next(events)
    assert first == tiling.TileProgress(done=2, total=9)
    events.close()
    assert len(net.batches) == 1  # nothing ran after the cancel
    assert net.training  # the caller's mode is restored
    seen = []
    tiling.predict_tiled(net, np.zeros((60, 60), np.float32), 36, 4, progress=seen.append)
    assert [e.done for e in seen] == [4, 8, 9] and {e.total for e in seen} == {9}


def test_auto_tile_and_batch_follow_free_memory(monkeypatch):
    import napari_unet.core.device as device

    net = _unet(3)
    monkeypatch.setattr(device, "free_memory_bytes", lambda _d: 64 * 1024**3)
    assert tiling.auto_tile_and_batch(net, torch.device("cpu")) == (1024, 2)
    monkeypatch.setattr(device, "free_memory_bytes", lambda _d: 1024)
    assert tiling.auto_tile_and_batch(net, torch.device("cpu")) == (124, 1)
    image = np.random.default_rng(8).random((50, 60)).astype(np.float32)
    np.testing.assert_allclose(
        tiling.predict_tiled(net, image), _whole_padded_pass(net, image), atol=2e-5
    )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_bf16_channels_last_is_close_to_cpu_fp32():
    net = _unet(3)
    image = np.random.default_rng(9).random((300, 517)).astype(np.float32)
    cpu = tiling.predict_tiled(net, image, tile_size=156, device="cpu")
    gpu = tiling.predict_tiled(net, image, tile_size=156, device="cuda")
    np.testing.assert_allclose(gpu, cpu, atol=0.03)


@pytest.mark.parametrize("box", [(5, 7, 30, 50), (0, 0, 45, 61), (20, 1, 45, 19)])
def test_a_region_sees_the_real_pixels_around_it(kernel, box):
    """Inside the image the context is the image itself; beyond it, the mirror."""
    image = np.random.default_rng(10).random((45, 61)).astype(np.float32)
    y0, x0, y1, x1 = box
    probs = tiling.predict_tiled(CorrelationProbe(kernel), image, 36, 2, region=box)
    whole = _sigmoid(correlate2d(_mirror_by_hand(image.astype(np.float64), 8), kernel, "valid"))
    assert probs.shape == (2, y1 - y0, x1 - x0)
    np.testing.assert_allclose(probs[1], whole[y0:y1, x0:x1], atol=1e-5)


def test_a_grid_aligned_region_of_a_unet_equals_that_part_of_the_whole_prediction():
    net = _unet(3)  # pooling factor 4: a region starting on multiples of 4 sees the same grid
    image = np.random.default_rng(11).random((70, 90)).astype(np.float32)
    whole = tiling.predict_tiled(net, image, tile_size=92)
    part = tiling.predict_tiled(net, image, tile_size=60, region=(8, 12, 66, 85))
    np.testing.assert_allclose(part, whole[:, 8:66, 12:85], atol=2e-5)
    with pytest.raises(InputError, match="outside"):
        tiling.predict_tiled(net, image, region=(8, 12, 71, 85))
