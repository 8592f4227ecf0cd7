"""Chunked prediction on a dask.distributed cluster: a LocalCluster (``--workers N``) or
any running scheduler (``--scheduler ADDRESS``: SLURM/PBS via dask-jobqueue, Kubernetes).

Every chunk is one task running `chunked.run_chunk`; a worker process loads the model
and opens the image once (cached in that process) however many chunks it gets. Failed
tasks are retried by dask (a dead worker's tasks are rescheduled), and chunks already
written (their done-marker exists) are never submitted again. Stitching and writing
the outputs stay in the calling process (`chunked.finish`): they are cheap and chunked.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import Generator, Iterator
from typing import Any

from napari_unet.core import chunked
from napari_unet.core.events import Done
from napari_unet.core.io import InputError

RETRIES = 3  # extra tries of a chunk whose task raised (a killed worker does not count)


@contextlib.contextmanager
def connect(
    workers: int | None = None,
    scheduler: str | None = None,
    processes: bool = True,
    timeout_s: float = 20.0,
) -> Iterator[Any]:
    """A dask ``Client``: on a new LocalCluster of ``workers`` single-threaded processes, or
    on the scheduler at ``scheduler`` (which must see the same files as this machine)."""
    from distributed import Client, LocalCluster

    if scheduler:
        try:
            client = Client(scheduler, timeout=f"{timeout_s}s")
        except OSError as exc:
            raise InputError(f"cannot reach the dask scheduler at {scheduler!r}: {exc}") from exc
        with client:
            yield client
        return
    if not workers or workers < 1:
        raise InputError(f"--workers must be at least 1; got {workers}")
    with (
        LocalCluster(
            n_workers=int(workers),
            threads_per_worker=1,
            processes=processes,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def threads_per_worker(client: Any) -> int:
    """Torch threads per worker so the workers sharing a machine share its cores (the
    fewest cores per worker over the cluster's machines), rather than oversubscribe them."""
    cores = client.run(os.cpu_count)  # worker address -> cores of its machine
    hosts = client.scheduler_info(n_workers=-1)["workers"]
    per_host: dict[str, list[int]] = {}
    for address, n in cores.items():
        per_host.setdefault(hosts[address]["host"], []).append(n or 1)
    return max(1, min((n[0] // len(n) for n in per_host.values()), default=1))


def run_chunks(job: chunked.ChunkJob, client: Any) -> Generator[Done, None, None]:
    """Submit the chunks still to do; yields (done, total) as they finish. Closing the
    generator cancels what has not run yet (finished chunks stay written)."""
    from distributed import as_completed

    todo = chunked.pending(job)
    total = len(job.grid.indices())
    done = total - len(todo)
    yield Done(done, total)
    if not todo:
        return
    task = functools.partial(chunked.run_chunk, job)
    futures = client.map(task, todo, retries=RETRIES, pure=False)
    try:
        for future in as_completed(futures):
            future.result()  # a chunk that failed RETRIES + 1 times raises here
            done += 1
            yield Done(done, total)
    finally:
        client.cancel(futures)
