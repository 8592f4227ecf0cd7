"""dask.distributed driver: same labels as one process, model loaded once per worker,
a killed worker's chunks are redone, finished chunks are not."""

from __future__ import annotations

import os

import numpy as np
import pytest

from _threshold_model import threshold_unet
from napari_unet.core import checkpoint, chunked, distributed


@pytest.fixture
def files(cells_2d, tmp_path):
    """The image as a .npy file and the model as a .safetensors file (what workers open)."""
    image = cells_2d[0]
    np.save(tmp_path / "image.npy", image)
    net = threshold_unet()
    checkpoint.save(tmp_path / "model.safetensors", net)
    return image, net, str(tmp_path / "model.safetensors"), str(tmp_path / "image.npy")


def _job(net, model, image_ref, image, work, chunk_px=64, **kwargs):
    grid = chunked.plan(net, image.shape, chunk_px)
    ranges = chunked.sample_ranges(image, None, grid)
    job = chunked.ChunkJob(model, image_ref, None, str(work), grid, ranges, **kwargs)
    chunked.prepare_work(job)
    return job


def _labels(job):
    return chunked.assemble(job, chunked.stitch(job))


def _one_process_labels(files, tmp_path, chunk_px=64):
    image, net, _, _ = files
    job = _job(net, net, image, image, tmp_path / "single", chunk_px)
    for _ in chunked.run_local(job):
        pass
    return _labels(job)


def test_a_two_worker_cluster_gives_the_labels_of_one_process(files, tmp_path):
    image, net, model_path, image_path = files
    expected = _one_process_labels(files, tmp_path)
    chunked._load_model.cache_clear()
    job = _job(net, model_path, image_path, image, tmp_path / "work", threads=1)
    with distributed.connect(workers=2, processes=False) as client:
        events = list(distributed.run_chunks(job, client))
        assert len(client.scheduler_info()["workers"]) == 2
    assert events[-1].done == events[-1].total == 16
    assert chunked._load_model.cache_info().misses == 1  # one load, however many chunks
    np.testing.assert_array_equal(_labels(job), expected)
    assert expected.max() > 20


def test_a_rerun_on_the_cluster_submits_only_unfinished_chunks(files, tmp_path):
    image, net, model_path, image_path = files
    job = _job(net, model_path, image_path, image, tmp_path / "work")
    for index in job.grid.indices()[:10]:
        chunked.run_chunk(job, index)
    with distributed.connect(workers=1, processes=False) as client:
        events = list(distributed.run_chunks(job, client))
    assert [e.done for e in events] == list(range(10, 17))


def test_an_unreachable_scheduler_is_one_clear_error():
    from napari_unet.core.io import InputError

    with (
        pytest.raises(InputError, match="cannot reach the dask scheduler"),
        distributed.connect(scheduler="tcp://127.0.0.1:1", timeout_s=1),
    ):
        pass


@pytest.mark.slow
def test_a_worker_killed_mid_run_still_completes_every_chunk(files, tmp_path):
    image, net, model_path, image_path = files
    expected = _one_process_labels(files, tmp_path, chunk_px=32)
    job = _job(net, model_path, image_path, image, tmp_path / "work", chunk_px=32, threads=1)
    killed = None
    with distributed.connect(workers=2, processes=True) as client:
        events = distributed.run_chunks(job, client)
        for event in events:
            if killed is None and event.done >= 2:
                busy = [w for w, tasks in client.processing().items() if tasks]
                killed = (busy or list(client.scheduler_info()["workers"]))[0]
                pids = client.run(os.getpid, workers=[killed])
                os.kill(pids[killed], 9)  # the nanny restarts it; dask reruns its tasks
        assert event.done == event.total == 64
    assert killed is not None
    assert chunked.pending(job) == []
    np.testing.assert_array_equal(_labels(job), expected)
