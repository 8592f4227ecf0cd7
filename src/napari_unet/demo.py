"""`python -m napari_unet.demo`: napari with the sample image and every U-Net dock open.

The seven docks share the right-hand area as tabs in workflow order (Annotate first);
the tabs run down the window's edge so every name stays readable in a default-size
window, and each dock scrolls when the window is short.
"""

from __future__ import annotations


def arrange(dock_widgets: list) -> None:
    """Tab titles are the bare dock names, tabs run down the right edge, the first is shown."""
    from qtpy.QtCore import Qt, QTimer
    from qtpy.QtWidgets import QTabWidget

    if not dock_widgets:
        return
    window = dock_widgets[0].parentWidget()  # napari's QMainWindow
    window.setTabPosition(Qt.DockWidgetArea.RightDockWidgetArea, QTabWidget.TabPosition.East)
    for dock_widget in dock_widgets:
        dock_widget.setWindowTitle(dock_widget.name.split(" (")[0])
    QTimer.singleShot(0, dock_widgets[0].raise_)  # once the tabs exist


def main() -> None:
    import napari
    from npe2 import PluginManager

    viewer = napari.Viewer(title="napari-unet demo")
    viewer.open_sample("napari-unet", "cells2d")
    manifest = PluginManager.instance().get_manifest("napari-unet")
    docks = [
        viewer.window.add_plugin_dock_widget("napari-unet", widget.display_name, tabify=True)[0]
        for widget in manifest.contributions.widgets or []
    ]
    arrange(docks)
    napari.run()


if __name__ == "__main__":
    main()
