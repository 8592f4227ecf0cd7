"""The package installs as a napari plugin and imports cheaply."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest


def test_import_does_not_load_torch_or_qt():
    code = (
        "import sys, napari_unet, napari_unet.core, napari_unet.core.io, napari_unet._cli, "
        "napari_unet.core.synthetic, napari_unet._sample_data;"
        "bad = [m for m in ('torch', 'qtpy', 'PyQt6', 'PyQt5', 'PySide6', 'napari') if m in sys.modules];"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_manifest_validates_and_every_python_name_imports():
    from npe2 import PluginManifest

    manifest = PluginManifest.from_distribution("napari-unet")
    assert manifest.name == "napari-unet"
    for command in manifest.contributions.commands:
        module, _, attr = command.python_name.partition(":")
        obj = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
        assert callable(obj), command.python_name
    result = subprocess.run(
        [sys.executable, "-m", "npe2", "validate", "napari-unet"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_manifest_lists_the_docks_and_samples():
    from npe2 import PluginManifest

    manifest = PluginManifest.from_distribution("napari-unet")
    docks = [w.display_name for w in manifest.contributions.widgets]
    # All seven, in the order of the work (the Plugins menu and the demo's tabs follow it).
    assert docks == [
        "Annotate",
        "Weight map",
        "Augmentation",
        "Train",
        "Predict",
        "Evaluate",
        "Review",
    ]
    keys = {s.key for s in manifest.contributions.sample_data}
    assert keys == {"cells2d", "cells3d", "nuclei_membrane", "stained_nuclei"}


@pytest.mark.parametrize("argv", [["--help"], ["--version"]])
def test_cli_entry_point_runs(argv):
    script = Path(sys.executable).with_name("napari-unet")
    out = subprocess.run([str(script), *argv], capture_output=True, text=True)
    assert out.returncode == 0
    assert "napari-unet" in out.stdout


def test_opening_the_docks_does_not_load_torch():
    """napari imports a dock's module when it opens; torch loads only when work starts."""
    code = (
        "import sys; from npe2 import PluginManifest;"
        "m = PluginManifest.from_distribution('napari-unet');"
        "import importlib;"
        "[importlib.import_module(c.python_name.split(':')[0]) for c in m.contributions.commands];"
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
