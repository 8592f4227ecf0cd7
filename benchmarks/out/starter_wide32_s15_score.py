"""Score a nuclei model file as make_starter_model.score does (TTA, defaults), on all 79
held-out fluorescence images; report the first 30 too and touching pairs.

    python benchmarks/out/starter_wide32_s15_score.py MODEL.safetensors /path/to/data/real
"""
import sys, time, json
import numpy as np
sys.path.insert(0, "benchmarks")  # run from the repository root
from _real import dsb_index, load_dsb
from napari_unet.core import checkpoint, metrics
from napari_unet.core.predict import PredictConfig, prediction_job
from napari_unet.core.events import run_to_end
TH = tuple(np.round(np.arange(0.5, 0.96, 0.05), 2))
net, meta = checkpoint.load(sys.argv[1])
aps, sep, tot, t0 = [], 0, 0, time.time()
for e in dsb_index(sys.argv[2]):
    if not e.held_out or e.cls != "fluorescence_gray":
        continue
    image, truth = load_dsb(sys.argv[2], e.id)
    lab = run_to_end(prediction_job((net, meta), image, PredictConfig(device="cpu"))).labels
    aps.append(metrics.average_precision(truth, lab, TH))
    s, k = metrics.touching_pairs_separated(truth, lab); sep += s; tot += k
a, a30 = np.mean(aps, 0), np.mean(aps[:30], 0)
print(json.dumps({"model": sys.argv[1], "first30": {"ap50": round(a30[0], 4), "ap75": round(a30[5], 4), "map": round(a30.mean(), 4)},
                  "all79": {"ap50": round(a[0], 4), "ap75": round(a[5], 4), "map": round(a.mean(), 4)}, "pairs": [sep, tot], "seconds": round(time.time() - t0)}))
