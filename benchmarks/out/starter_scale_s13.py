import json, sys, copy
import numpy as np, torch
sys.path.insert(0, "/work/main/benchmarks")
torch.set_num_threads(1)
from _real import dsb_index, load_dsb
from napari_unet.core import checkpoint, metrics, size
from napari_unet.core.predict import PredictConfig, prediction_job
from napari_unet.core.events import run_to_end
from napari_unet.models import starter_model_path
from make_starter_model import SCORE_THRESHOLDS
net, meta = checkpoint.load(starter_model_path())
root = "/work/shared/data/real"
scales = [0.6, 0.8, 1.0, 1.25, 1.6, 2.0]
rows = []
for entry in dsb_index(root):
    if not entry.held_out or entry.cls != "fluorescence_gray":
        continue
    if len(rows) >= int(sys.argv[1]): break
    image, truth = load_dsb(root, entry.id)
    row = {"id": entry.id, "gt_d": size.typical_diameter(truth), "shape": image.shape}
    for s in scales:
        m = copy.deepcopy(meta); m.setdefault("normalisation", {})["scale"] = s
        lab = run_to_end(prediction_job((net, m), image, PredictConfig(device="cpu"))).labels
        ap = metrics.average_precision(truth, lab, SCORE_THRESHOLDS)
        row[str(s)] = [round(float(ap[0]), 4), round(float(ap.mean()), 4)]
        if s == 1.0: row["pred_d"] = size.typical_diameter(lab)
    rows.append(row); print(json.dumps(row), flush=True)
json.dump(rows, open("/work/exp/s13/scale_exp.json", "w"))
