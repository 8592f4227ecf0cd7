"""Experiment: continue the shipped nuclei starter with a 3-class target whose border
class is a ring of width RING_FRAC x each cell's inner radius (not 1 px), so interiors
are seeds well apart even where nuclei press together. Not adopted (starter_ring_soup_s16.json).

    RING_FRAC=0.35 python benchmarks/out/starter_ring_s16.py OUT.safetensors MINUTES /path/to/data/real
"""
import os, sys
from pathlib import Path
import numpy as np
from scipy import ndimage as ndi
sys.path.insert(0, "benchmarks")  # run from the repository root
import napari_unet.core.data as data
from napari_unet.core import weights as weight_maps

FRAC = float(os.environ.get("RING_FRAC", "0.35"))
_orig = data._targets

def ring_targets(labels, n_classes):
    targets = _orig(labels, n_classes)
    if n_classes != 3:
        return targets
    separated = weight_maps.separate_touching(labels)
    for i, s in enumerate(separated.reshape((-1,) + separated.shape[-2:])):
        if not s.any():
            continue
        dist = ndi.distance_transform_edt(s > 0)
        n = int(s.max())
        rmax = ndi.maximum(dist, labels=s, index=np.arange(n + 1))
        rmax = np.asarray(rmax); rmax[0] = 0
        ring = (s > 0) & (dist <= np.maximum(1.0, FRAC * rmax[s]))
        t = targets.reshape((-1,) + s.shape)[i]
        t[ring] = 2
    return targets

data._targets = ring_targets
import make_starter_model as m
if __name__ == "__main__":
    out = Path(sys.argv[1]); minutes = float(sys.argv[2])
    pairs, ids = m.crops(sys.argv[3])
    result = m.train_starter(pairs, out, minutes, 10**6, str(m.starter_model_path()))
    m.save_starter(result, out, str(m.starter_model_path()), {"ring_frac": FRAC}, Path(str(out).replace(".safetensors", "_last.safetensors")))
