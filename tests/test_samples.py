"""Sample data for channels and colour: the two-channel synthetic cells and the shipped
real RGB crop open in napari as the layers the channel picker works with."""

from __future__ import annotations

import numpy as np

from napari_unet._sample_data import SAMPLES
from napari_unet.core.synthetic import nuclei_and_membrane


def test_nuclei_and_membrane_channels_mark_cores_and_borders():
    image, labels = nuclei_and_membrane((128, 128), seed=2)
    assert image.shape == (2, 128, 128) and image.dtype == np.float32
    from skimage.segmentation import find_boundaries

    borders = find_boundaries(labels, mode="inner")
    inside = (labels > 0) & ~borders
    assert image[0][inside].mean() > 3 * image[0][labels == 0].mean()  # nuclei in cells
    assert image[1][borders].mean() > 3 * image[1][inside].mean()  # membranes at borders


def test_new_samples_open_in_the_viewer(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-unet", "nuclei_membrane")
    viewer.open_sample("napari-unet", "stained_nuclei")
    assert viewer.layers["nuclei"].data.shape == viewer.layers["membrane"].data.shape
    stained = viewer.layers["stained nuclei"]
    assert stained.rgb and stained.data.shape == (192, 192, 3)
    truth = viewer.layers["stained nuclei ground truth"].data
    assert truth.shape == (192, 192) and truth.max() == len(np.unique(truth)) - 1 > 20
    shipped = sum(p.stat().st_size for p in SAMPLES.iterdir())
    assert shipped < 200_000
