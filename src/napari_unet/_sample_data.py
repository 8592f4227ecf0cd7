"""npe2 sample data: synthetic touching cells (2D and a small 3D stack), made offline."""

from __future__ import annotations

from napari_unet.core.synthetic import touching_cells, touching_cells_3d


def _layers(image, labels, what: str):
    return [
        (image, {"name": f"cells {what}", "colormap": "gray"}, "image"),
        (labels, {"name": f"cells {what} ground truth", "visible": False}, "labels"),
    ]


def cells_2d():
    """512x512 image of touching cells with its ground-truth labels (hidden)."""
    return _layers(*touching_cells((512, 512), seed=0), "2D")


def cells_3d():
    """(16, 256, 256) stack of touching cells with its ground-truth labels (hidden)."""
    return _layers(*touching_cells_3d((16, 256, 256), seed=0), "3D")
