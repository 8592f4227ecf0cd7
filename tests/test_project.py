"""Project folder: annotations, settings and the model survive a restart, and a kill."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from napari_unet.core import project
from napari_unet.core.io import InputError


def test_labels_and_settings_round_trip(tmp_path):
    folder = project.folder_for(tmp_path / "cells.tif")
    assert folder == tmp_path / "cells.napari-unet"
    first = np.arange(12, dtype=np.uint32).reshape(3, 4)
    odd_name = "cells/2 annotations (v1)"  # a slash must not make a sub-folder
    project.save_labels(folder, "cells annotations", first)
    project.save_labels(folder, odd_name, first[None] * 2)
    project.save_settings(folder, {"training": {"steps": 40, "lr": None}})
    project.save_settings(folder, {"image": "cells.tif"})  # merged, not replaced

    assert project.saved_labels(folder) == sorted([odd_name, "cells annotations"])
    loaded = project.load_labels(folder)
    np.testing.assert_array_equal(loaded["cells annotations"], first)
    assert loaded["cells annotations"].dtype == np.uint32
    np.testing.assert_array_equal(loaded[odd_name], first[None] * 2)
    assert project.load_settings(folder) == {
        "image": "cells.tif",
        "training": {"steps": 40, "lr": None},
    }
    assert not [p for p in folder.rglob("*") if p.name.startswith(".")]  # no temporaries


def test_float_annotations_and_corrupt_files_give_clear_errors(tmp_path):
    with pytest.raises(InputError, match="integer labels"):
        project.save_labels(tmp_path, "x", np.zeros((2, 2), np.float32))
    (tmp_path / project.ANNOTATIONS).mkdir()
    (tmp_path / project.ANNOTATIONS / "bad.npy").write_bytes(b"not an array")
    with pytest.raises(InputError, match="bad.npy"):
        project.load_labels(tmp_path)
    (tmp_path / project.SETTINGS).write_text("{")
    with pytest.raises(InputError, match="settings"):
        project.load_settings(tmp_path)


def test_model_is_kept_in_the_project(tmp_path):
    from napari_unet.core import checkpoint
    from napari_unet.core.model import UNet

    net = UNet(base_channels=4, depth=2)
    assert project.model_path(tmp_path) is None
    project.save_model(tmp_path, net, {"note": "best"})
    loaded, metadata = checkpoint.load(project.model_path(tmp_path))
    assert metadata["note"] == "best"
    for name, tensor in net.state_dict().items():
        np.testing.assert_array_equal(loaded.state_dict()[name].numpy(), tensor.numpy())


WRITER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from napari_unet.core import project

    folder = sys.argv[1]
    stroke = 0
    while True:
        stroke += 1
        # A big layer, so the kill often lands inside a write.
        project.save_labels(folder, "cells annotations", np.full((256, 1024), stroke, np.uint32))
        print(stroke, flush=True)
    """
)


def test_a_killed_process_leaves_a_whole_file_and_loses_at_most_the_last_stroke(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(Path(project.__file__).parents[2])}
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True, env=env
    )
    last = 0
    try:
        for line in writer.stdout:
            last = int(line)
            if last >= 30:
                break
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    assert last >= 30
    saved = project.load_labels(tmp_path)["cells annotations"]  # loads: never half-written
    values = np.unique(saved)
    assert values.size == 1  # one whole stroke, not a mix of two
    # Every reported stroke is on disk; at most the one being written is lost.
    assert values[0] >= last
