"""Shared fixtures: small synthetic touching-cell data made on the fly (never downloaded)."""

from __future__ import annotations

import os

import numpy as np
import pytest

# Keep torch to the CI machine's two cores and away from the GUI thread's share.
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def cells_2d() -> tuple[np.ndarray, np.ndarray]:
    """(image, labels) 256x256 synthetic touching cells."""
    from napari_unet.core.synthetic import touching_cells

    return touching_cells((256, 256), seed=1)


@pytest.fixture(scope="session")
def cells_3d() -> tuple[np.ndarray, np.ndarray]:
    """(image, labels) (6, 128, 128) synthetic stack."""
    from napari_unet.core.synthetic import touching_cells_3d

    return touching_cells_3d((6, 128, 128), seed=2)
