import sys, numpy as np
sys.path.insert(0, "/work/main/benchmarks")
from _real import load_phase
from napari_unet.core import checkpoint, postprocess
from napari_unet.core import predict as P
from napari_unet.core.events import run_to_end
from napari_unet.models import phase_starter_model_path
net, meta = checkpoint.load(phase_starter_model_path())
stack, truth = load_phase("/work/shared/data/real")
cap = {}
orig = postprocess.to_instances
def grab(p, **kw):
    cap["p"] = p.copy(); return orig(p, **kw)
P.postprocess.to_instances = grab
out = {}
for i in (0, 1, 2, 3, 4, 5):
    run_to_end(P.prediction_job((net, meta), stack[i], P.PredictConfig(device="cpu")))
    out[f"p{i}"] = cap["p"].astype(np.float16); out[f"t{i}"] = truth[i]
    print(i, flush=True)
np.savez_compressed("/work/exp/s15/phase6.npz", **out)
import numpy as np
from scipy import ndimage as ndi
from napari_unet.core import metrics, postprocess as pp
z = np.load("/work/exp/s15/phase6.npz")
def fg_iou(t, l):
    a, b = t > 0, l > 0
    return (a & b).sum() / (a | b).sum()
print("diameter?", )
for i in (2, 3, 4, 5):
    p = z[f"p{i}"].astype(np.float32); t = z[f"t{i}"]
    base = pp.to_instances(p)
    cell = 1 - p[0]
    row = [f"img{i} base {fg_iou(t, base):.3f}"]
    for c in (0.5, 0.6, 0.7, 0.8):
        row.append(f"cell>{c} {fg_iou(t, cell > c):.3f}")
    # extents restricted: labels & cell > c
    for c in (0.6, 0.7):
        row.append(f"lab&{c} {fg_iou(t, base * (cell > c)):.3f}")
    # erosion of base by 1,2 px
    for r in (1, 2):
        row.append(f"erode{r} {fg_iou(t, ndi.binary_erosion(base > 0, iterations=r)):.3f}")
    # pixel stats
    a, b = t > 0, base > 0
    row.append(f"extra {(b & ~a).sum()} missed {(a & ~b).sum()}")
    print(" | ".join(row))
import numpy as np
from napari_unet.core import size
z = np.load("/work/exp/s15/phase6.npz")
for i in (2, 3):
    t = z[f"t{i}"]
    for s in (0.45, 0.68):
        small = size.resize((t > 0).astype(np.float32)[None], (1, *size.scaled_shape(t.shape, s)[-2:]))
        back = size.resize(small, (1, *t.shape))[0] > 0.5
        a = t > 0
        print(i, s, round((a & back).sum() / (a | back).sum(), 4))
