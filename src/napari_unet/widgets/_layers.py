"""Layers as the docks see them: pickers that follow the layer list, the plugin's own
layers, and the slice under the viewer's sliders (in the layer's own pixel grid)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from magicgui.widgets import ComboBox

# layer.metadata key marking a layer the plugin made. "preview" layers (weight maps,
# galleries, training previews, error layers...) are never offered as inputs; "result"
# layers (predicted labels) are, since people evaluate, correct and train on them.
# "background" layers (the Annotate dock's background strokes) belong to their image and
# are read through it, so no picker offers them either.
OWNER_KEY = "napari_unet"
PREVIEW, RESULT, BACKGROUND = "preview", "result", "background"


def kind_of(layer) -> str:
    """ "image", "labels", "shapes", "points", ... (the napari layer class, lower case)."""
    return type(layer).__name__.lower()


def is_preview(layer) -> bool:
    return getattr(layer, "metadata", {}).get(OWNER_KEY) == PREVIEW


def is_offered(layer) -> bool:
    """Whether layer pickers offer ``layer``: not a preview nor background strokes."""
    return getattr(layer, "metadata", {}).get(OWNER_KEY) not in (PREVIEW, BACKGROUND)


def owned_layer(viewer, name: str):
    """The plugin's layer ``name`` (or, when a user's layer took that name, its stand-in)."""
    for candidate in (name, f"{name} (U-Net)"):
        layer = layer_named(viewer, candidate)
        if layer is not None and OWNER_KEY in layer.metadata:
            return layer
    return None


def set_layer(viewer, name: str, data, kind: str = "image", role: str = PREVIEW, **kwargs: Any):
    """Replace the data of the plugin's layer ``name`` or add it; mark it as the plugin's.

    A user's layer is never written: if one already has that name, the plugin's layer
    is called "<name> (U-Net)" instead.
    """
    layer = owned_layer(viewer, name)
    if layer is not None and kind_of(layer) == kind:
        layer.data = data  # keep the user's display settings (contrast, opacity)
        return layer
    if layer is not None:
        viewer.layers.remove(layer)
    if layer_named(viewer, name) is not None:
        name = f"{name} (U-Net)"
    # Marked as the plugin's before it is inserted, so pickers never offer a preview.
    metadata = {**kwargs.pop("metadata", {}), OWNER_KEY: role}
    return getattr(viewer, f"add_{kind}")(data, name=name, metadata=metadata, **kwargs)


def layer_named(viewer, name: str):
    """The viewer's layer called ``name``, or None."""
    return next((layer for layer in viewer.layers if layer.name == name), None)


def layer_picker(
    viewer,
    kind: str,
    *,
    none: str | None = None,
    prefer: Callable[[Any], bool] | None = None,
    tooltip: str = "",
) -> ComboBox:
    """A magicgui layer box offering the viewer's layers of ``kind`` (`is_offered`).

    ``reset_choices()`` refreshes it, keeping the current choice while it exists (a
    `Dock` calls it on every change of the layer list). ``none``: an entry meaning "no
    layer" (value None). ``prefer``: layers it accepts come first, so they are the
    default pick, and a new one replaces "no layer" when it appears.
    """

    def choices(_widget=None) -> list[tuple[str, Any]]:
        layers = [x for x in viewer.layers if kind_of(x) == kind and is_offered(x)]
        preferred = [x for x in layers if prefer is not None and prefer(x)]
        others = [x for x in layers if x not in preferred]
        entries = [(x.name, x) for x in preferred]
        return entries + ([(none, None)] if none else []) + [(x.name, x) for x in others]

    picker = ComboBox(choices=choices, nullable=False, tooltip=tooltip or None)
    if none and prefer is not None:
        seen: set[int] = {id(x) for x in picker.choices if x is not None}

        def take_preferred(*_args) -> None:
            new = [x for x in picker.choices if x is not None and id(x) not in seen]
            seen.update(id(x) for x in new)
            if picker.value is None and new and prefer(new[0]):
                picker.value = new[0]

        picker.reset_choices = _then(picker.reset_choices, take_preferred)
    return picker


def _then(first: Callable, second: Callable) -> Callable:
    def both(*args):
        first(*args)
        second()

    return both


def select(picker: ComboBox, layer) -> None:
    """Choose ``layer`` in a picker (when it is offered)."""
    if layer in picker.choices:
        picker.value = layer


def plane_index(viewer, layer, keep: int = 2) -> tuple[int, ...]:
    """Index of the plane of ``layer`` under the viewer's sliders, in the layer's pixels.

    Goes through ``layer.world_to_data`` so scaled and translated layers are read at the
    slice on screen. ``keep`` trailing axes are returned whole (2: a Y, X plane).
    """
    shape = layer.data.shape[: len(layer.data.shape) - keep]
    if not shape:
        return ()
    point = layer.world_to_data(viewer.dims.point)[: len(shape)]
    return tuple(int(np.clip(round(p), 0, n - 1)) for p, n in zip(point, shape, strict=True))


def current_plane(viewer, layer) -> np.ndarray:
    """A copy of the 2D plane of ``layer`` on screen (painting may go on meanwhile): (Y, X),
    or (Y, X, C) for an RGB(A) layer."""
    keep = 3 if getattr(layer, "rgb", False) else 2
    return np.array(layer.data[plane_index(viewer, layer, keep)])


def go_to_plane(viewer, layer, index: tuple[int, ...]) -> None:
    """Move the viewer's sliders to the plane ``index`` of ``layer`` (its leading axes)."""
    centre = [*index, *np.asarray(layer.data.shape[len(index) :]) // 2]
    world = layer.data_to_world(centre)
    offset = viewer.dims.ndim - len(world)
    for axis, value in enumerate(world[: len(index)]):
        viewer.dims.set_point(offset + axis, value)


def pixel_shape(layer) -> tuple[int, ...]:
    """The pixel grid of a layer: its data shape without an RGB(A) axis."""
    shape = tuple(layer.data.shape)
    return shape[:-1] if getattr(layer, "rgb", False) else shape


def grid_problem(layer) -> str | None:
    """Why a layer cannot be a U-Net input (not 2D or a 3D stack), or None."""
    shape = pixel_shape(layer)
    if len(shape) in (2, 3):
        return None
    return (
        f"{kind_of(layer).capitalize()} {layer.name!r} has shape {shape}: the U-Net docks "
        "take a 2D image (Y, X) or a stack (Z, Y, X). Pick another layer."
    )
