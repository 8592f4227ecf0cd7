"""napari-unet: the U-Net of Ronneberger et al. (2015) as a napari plugin.

Importing this package must stay cheap: no torch, no Qt. Those load on first use.
"""

__version__ = "0.1.0"
