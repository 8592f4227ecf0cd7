"""`python -m napari_unet.demo`: napari with the sample image and every U-Net dock open."""

from __future__ import annotations


def main() -> None:
    import napari
    from npe2 import PluginManager

    viewer = napari.Viewer(title="napari-unet demo")
    viewer.open_sample("napari-unet", "cells2d")
    manifest = PluginManager.instance().get_manifest("napari-unet")
    for widget in manifest.contributions.widgets or []:
        viewer.window.add_plugin_dock_widget("napari-unet", widget.display_name, tabify=True)
    napari.run()


if __name__ == "__main__":
    main()
