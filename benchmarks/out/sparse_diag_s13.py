"""Why fine-tuning 9620c33d on 10 painted cells ends below the starter: weights or metadata?"""
import sys, copy, json
sys.path.insert(0, "/work/main/benchmarks")
import numpy as np
from bench_sparse import fine_tune, paint, score, predicted_labels, shipped_models
from _real import load_dsb
from napari_unet.core import checkpoint
from napari_unet.core.model import UNet
root = "/work/shared/data/real"
iid, k = sys.argv[1], int(sys.argv[2])
image, truth = load_dsb(root, iid)
painted = paint(truth, k, 0)
starts = [str(m.path) for m in shipped_models()]
result, losses, s = fine_tune(image, painted, 2.0, 0, None, None, starts)
tn, tm = result.best_net(), result.metadata
sn, sm = checkpoint.load(starts[0])
print("from", tm["training"]["from"], "tuned diameter", tm.get("normalisation", {}).get("diameter_px"), "starter diameter", sm.get("normalisation", {}).get("diameter_px"), "scale", tm.get("normalisation", {}).get("scale"))
f = lambda n, m: round(score("nuclei", truth, painted, predicted_labels(n, m, image)), 3)
out = {"tuned": f(tn, tm), "tuned_net_starter_meta": f(tn, sm), "starter": f(sn, sm), "starter_net_tuned_meta": f(sn, tm)}
if result.resume is not None:
    ln = UNet(**result.config); ln.load_state_dict(result.resume.weights); ln.eval()
    out["last_weights"] = f(ln, tm)
out["best_step"], out["steps"] = result.best_step, result.steps_done
print(json.dumps(out))
