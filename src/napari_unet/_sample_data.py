"""npe2 sample data: synthetic touching cells (2D, a 3D stack, two channels) made offline,
and a small real stained-brightfield RGB crop shipped with the package (DSB 2018, CC0)."""

from __future__ import annotations

from pathlib import Path

from napari_unet.core.synthetic import nuclei_and_membrane, touching_cells, touching_cells_3d

SAMPLES = Path(__file__).parent / "samples"


def _layers(image, labels, what: str, **image_kwargs):
    return [
        (image, {"name": f"cells {what}", "colormap": "gray", **image_kwargs}, "image"),
        (labels, {"name": f"cells {what} ground truth", "visible": False}, "labels"),
    ]


def cells_2d():
    """512x512 image of touching cells with its ground-truth labels (hidden)."""
    return _layers(*touching_cells((512, 512), seed=0), "2D")


def cells_3d():
    """(16, 256, 256) stack of touching cells with its ground-truth labels (hidden)."""
    image, labels = touching_cells_3d((16, 256, 256), seed=0)
    from napari_unet.core.synthetic import Z_SCALE

    scale = (1.0 / Z_SCALE, 1.0, 1.0)  # Z steps coarser than pixels: the voxel size
    layers = _layers(image, labels, "3D", scale=scale)
    layers[1][1]["scale"] = scale
    return layers


def nuclei_membrane():
    """Two channels as two layers (napari's ``channel_axis``): nuclei and membranes of
    the same 256x256 touching cells, and the cells' ground truth (hidden)."""
    image, labels = nuclei_and_membrane((256, 256), seed=0)
    return [
        (image[0], {"name": "nuclei", "colormap": "green", "blending": "additive"}, "image"),
        (image[1], {"name": "membrane", "colormap": "magenta", "blending": "additive"}, "image"),
        (labels, {"name": "cells ground truth", "visible": False}, "labels"),
    ]


def stained_nuclei():
    """A 192x192 RGB crop of stained-tissue brightfield (H&E-like) with its nuclei
    (DSB 2018 stage-1 image 2dd3356f2dcf470a, CC0; community-fixed masks)."""
    from napari_unet.core import io

    return [
        (
            io.read(SAMPLES / "stained_nuclei.tif"),
            {"name": "stained nuclei", "rgb": True},
            "image",
        ),
        (
            io.read(SAMPLES / "stained_nuclei_labels.tif"),
            {"name": "stained nuclei ground truth", "visible": False},
            "labels",
        ),
    ]
