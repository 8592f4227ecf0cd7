"""Does the starter fit its own training images better than held-out ones? Scores the
first N fluorescence images it was trained on (whole images, TTA, defaults), as
starter_wide32_s15_score.py scores held-out ones.

    python benchmarks/out/starter_train_fit_s16.py MODEL.safetensors /path/to/data/real N
"""
import sys, json, numpy as np
sys.path.insert(0, "benchmarks")
from _real import dsb_index, load_dsb
from napari_unet.core import checkpoint, metrics
from napari_unet.core.predict import PredictConfig, prediction_job
from napari_unet.core.events import run_to_end
TH = tuple(np.round(np.arange(0.5, 0.96, 0.05), 2))
net, meta = checkpoint.load(sys.argv[1]); root = sys.argv[2]
trained = set(meta.get("starter", {}).get("training_ids", []))
aps, sep, tot = [], 0, 0
for e in dsb_index(root):
    if e.held_out or e.cls != "fluorescence_gray" or e.id not in trained:
        continue
    image, truth = load_dsb(root, e.id)
    lab = run_to_end(prediction_job((net, meta), image, PredictConfig(device="cpu"))).labels
    aps.append(metrics.average_precision(truth, lab, TH))
    s, k = metrics.touching_pairs_separated(truth, lab); sep += s; tot += k
    if len(aps) == int(sys.argv[3]):
        break
a = np.mean(aps, 0)
print(json.dumps({"training_images": len(aps), "ap50": round(a[0], 4), "ap75": round(a[5], 4), "map": round(a.mean(), 4), "pairs": [sep, tot]}))
