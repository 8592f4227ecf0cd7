"""Cache the shipped nuclei starter's TTA probabilities on the 30 held-out fluorescence images."""
import sys, time
import numpy as np
sys.path.insert(0, "/work/main/benchmarks")
from _real import dsb_index, load_dsb
from napari_unet.core import checkpoint, postprocess
from napari_unet.core import predict as P
from napari_unet.core.events import run_to_end
from napari_unet.models import starter_model_path

root = "/work/shared/data/real"
net, meta = checkpoint.load(starter_model_path())
print("diameter", postprocess.cell_diameter(meta))
captured = {}
orig = postprocess.to_instances
def grab(p, **kw):
    captured["p"] = p.copy()
    return orig(p, **kw)
P.postprocess.to_instances = grab
out = {}
t0 = time.time()
for entry in dsb_index(root):
    if not entry.held_out or entry.cls != "fluorescence_gray":
        continue
    image, truth = load_dsb(root, entry.id)
    run_to_end(P.prediction_job((net, meta), image, P.PredictConfig(device="cpu")))
    out[f"p_{entry.id}"] = captured["p"].astype(np.float16)
    out[f"t_{entry.id}"] = truth
    print(entry.id, time.time() - t0, flush=True)
np.savez_compressed("/work/exp/s15/probs30.npz", **out)
print("done", len(out) // 2)
