"""Chunked prediction of big images: exact probabilities, ids stitched across chunk
borders and corners, resumable chunks, lazy OME-Zarr / BigTIFF outputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from _threshold_model import threshold_unet
from napari_unet.core import bigio, chunked, postprocess, tiling
from napari_unet.core.model import UNet
from napari_unet.core.normalize import normalize


def _random_unet(depth=3):
    torch.manual_seed(0)
    return UNet(base_channels=2, depth=depth, dropout=0.0).eval()


CELL_PX = 20.0  # the cells' size the splitting is told (a trained model stores its own)


def _job(net, image, tmp_path, chunk_px=64, **kwargs):
    grid = chunked.plan(net, image.shape[-2:], chunk_px, kwargs.get("diameter_px"))
    ranges = kwargs.pop("value_ranges", None) or chunked.sample_ranges(image, None, grid)
    job = chunked.ChunkJob(net, image, None, str(tmp_path / "work"), grid, ranges, **kwargs)
    chunked.prepare_work(job)
    return job


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Same cells up to renumbering: a one-to-one map between the nonzero ids."""
    if not np.array_equal(a > 0, b > 0):
        return False
    pairs = np.unique(np.stack([a[a > 0], b[b > 0]]), axis=1)
    return len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]


def test_chunks_are_aligned_to_the_pooling_grid_and_halo_covers_the_context():
    net = _random_unet(depth=4)
    grid = chunked.plan(net, (1000, 3000), 1000)
    step, margin = tiling.pool_factor(net), tiling.margin_px(net)
    assert grid.chunk % step == 0 and grid.chunk % 16 == 0 and grid.chunk <= 1000
    assert grid.halo % step == 0 and grid.halo >= margin + step
    assert grid.counts == (-(-1000 // grid.chunk), -(-3000 // grid.chunk))


def test_chunked_probabilities_equal_the_whole_image_prediction(cells_2d, tmp_path):
    image = cells_2d[0][:200, :190]
    net = _random_unet()
    job = _job(net, image, tmp_path, chunk_px=64, foreground=True, tile_size=400)
    assert job.grid.counts == (4, 3)  # 3x3 inner chunk corners, partial chunks at the end
    for _ in chunked.run_local(job):
        pass
    fg = np.asarray(chunked.zarr_array(job, "foreground")[:])
    assert job.tta  # the default, as in `predict`: each chunk's tiles in 8 flips/rotations
    whole = tiling.predict_tiled(net, normalize(image), tile_size=124, tta=True)
    # The intensity range of a small image is measured on all of it.
    assert job.value_ranges[0] == pytest.approx(tuple(np.percentile(image, [1, 99.8])))
    np.testing.assert_allclose(fg, whole[1], atol=1e-5)


def _disc_image(shape, centres, radius):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    image = np.zeros(shape, np.float32)
    for cy, cx in centres:
        image[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] = 1.0
    return image


def test_a_cell_across_a_chunk_corner_keeps_one_id(tmp_path):
    net = threshold_unet()
    # One cell centred on the corner shared by four chunks, one across a vertical border,
    # one inside a chunk; intensity range fixed so the model's threshold is at 0.5.
    image = _disc_image((128, 128), [(64, 64), (20, 64), (100, 20)], 9)
    job = _job(net, image, tmp_path, chunk_px=64, value_ranges=((0.0, 1.0),))
    assert job.grid.counts == (2, 2)
    for _ in chunked.run_local(job):
        pass
    stitching = chunked.stitch(job)
    labels = chunked.assemble(job, stitching)
    assert stitching.stats.count == 3
    assert len(np.unique(labels[55:74, 55:74])) == 2  # background + one id across 4 chunks
    expected = postprocess.to_instances(tiling.predict_tiled(net, image))
    assert _same_partition(labels, expected)
    assert stitching.stats.areas[1:].sum() == (expected > 0).sum()


def test_touching_cells_split_by_a_chunk_border_stay_two_cells(tmp_path):
    net = threshold_unet()
    image = np.zeros((128, 128), np.float32)
    image[40:80, 30:64] = 1.0  # two cells meeting exactly on the chunk border x = 64,
    image[40:80, 64:100] = 1.0
    image[40:80, 63:65] = 0.0  # separated by a 2 px gap the labelling fills back
    job = _job(net, image, tmp_path, chunk_px=64, value_ranges=((0.0, 1.0),))
    for _ in chunked.run_local(job):
        pass
    labels = chunked.assemble(job, chunked.stitch(job))
    expected = postprocess.to_instances(tiling.predict_tiled(net, image))
    assert expected.max() == 2
    assert _same_partition(labels, expected)


def test_chunked_labels_match_the_whole_image_on_many_cells(cells_2d, tmp_path):
    image = cells_2d[0]
    net = threshold_unet()
    job = _job(net, image, tmp_path, chunk_px=64, diameter_px=CELL_PX)
    for _ in chunked.run_local(job):
        pass
    labels = chunked.assemble(job, chunked.stitch(job))
    whole = postprocess.to_instances(
        tiling.predict_tiled(net, normalize(image, value_range=job.value_ranges[0])),
        diameter_px=CELL_PX,
    )
    assert labels.max() == whole.max() > 20
    assert _same_partition(labels, whole)


def test_a_rerun_skips_finished_chunks(cells_2d, tmp_path):
    image = cells_2d[0][:128, :128]
    net = threshold_unet()
    job = _job(net, image, tmp_path, chunk_px=64)
    events = chunked.run_local(job)
    next(events), next(events), next(events)  # two chunks done, then interrupted
    events.close()
    assert len(chunked.pending(job)) == 2
    marker = tmp_path / "work" / "markers" / "0_0.npz"
    before = marker.stat().st_mtime_ns
    chunked.prepare_work(job)  # same job: the finished chunks are kept
    progress = list(chunked.run_local(job))
    assert progress[0].done == 2 and progress[-1].done == progress[-1].total == 4
    assert marker.stat().st_mtime_ns == before


@pytest.mark.parametrize("suffix", [".ome.zarr", ".tif"])
def test_outputs_are_written_chunk_by_chunk_and_read_back_lazily(cells_2d, tmp_path, suffix):
    image = cells_2d[0]
    net = threshold_unet()
    job = _job(net, image, tmp_path, chunk_px=64, foreground=True)
    for _ in chunked.run_local(job):
        pass
    stitching = chunked.stitch(job)
    expected = chunked.assemble(job, stitching)
    out, fg = tmp_path / f"labels{suffix}", tmp_path / f"fg{suffix}"
    chunked.finish(job, out, fg)
    assert not (tmp_path / "work").exists()
    labels = bigio.open_image(out)
    assert labels.shape == image.shape
    np.testing.assert_array_equal(np.asarray(labels[:]), expected)
    assert np.asarray(bigio.open_image(fg)[:]).max() > 0.9
    if suffix == ".ome.zarr":
        import zarr

        group = zarr.open_group(str(out), mode="r")
        datasets = group.attrs["ome"]["multiscales"][0]["datasets"]
        assert [d["path"] for d in datasets] == ["0"]  # 256 px: no smaller level needed


@pytest.mark.parametrize("channels_last", [False, True])
def test_two_channel_images_are_chunked_with_either_channel_axis(
    cells_2d, tmp_path, channels_last
):
    net = threshold_unet(in_channels=2)
    image = np.stack([cells_2d[0][:130, :150], np.ones((130, 150), np.float32)])
    data = np.moveaxis(image, 0, -1) if channels_last else image
    axis = chunked.channel_axis(data.shape, 2)
    assert axis == (2 if channels_last else 0)
    grid = chunked.plan(net, chunked.spatial_shape(data.shape, axis), 64)
    assert grid.shape == (130, 150)
    ranges = chunked.sample_ranges(data, axis, grid)
    job = chunked.ChunkJob(net, data, axis, str(tmp_path / "w"), grid, ranges, foreground=True)
    chunked.prepare_work(job)
    for _ in chunked.run_local(job):
        pass
    x = np.stack([normalize(c, value_range=r) for c, r in zip(image, ranges, strict=True)])
    whole = tiling.predict_tiled(net, x)
    np.testing.assert_allclose(chunked.zarr_array(job, "foreground")[:], whole[1], atol=1e-5)
    stats = chunked.stitch(job).stats
    assert stats.mean_intensity[1, 1:] == pytest.approx(1.0)  # the constant channel


def test_a_stack_is_refused_for_chunked_prediction():
    from napari_unet.core.io import InputError

    with pytest.raises(InputError, match="slice by slice"):
        chunked.channel_axis((5, 300, 300), 1)
