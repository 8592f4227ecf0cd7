"""Qt docks for napari. Thin: they gather parameters, start core jobs, show layers."""
