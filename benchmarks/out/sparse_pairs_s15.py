"""10 painted cells on each of two held-out nuclei images, fine-tuned together (more
pairs), 2 minutes, default settings; AP@0.5 on the rest of each image."""
import json, sys, time
import numpy as np
sys.path.insert(0, "/work/main/benchmarks")
from _real import load_dsb
from bench_sparse import paint, predicted_labels, score, max_spike
import napari_unet
from napari_unet.core import checkpoint
from napari_unet.core.train import Step, TrainConfig, TrainResult, training_job
from napari_unet.models import shipped_models
root = "/work/shared/data/real"
A, B = "6b72b61b80060a9e", "a891bbc89143bca7"
seed = int(sys.argv[1])
(ia, ta), (ib, tb) = load_dsb(root, A), load_dsb(root, B)
pa, pb = paint(ta, 10, seed), paint(tb, 10, seed)
starts = [str(m.path) for m in shipped_models()]
result, losses, t0 = TrainResult(), [], time.perf_counter()
config = TrainConfig(device="cpu", max_minutes=2.0, seed=seed)
for ev in training_job(ia, pa, config, starts, result=result, extra_pairs=[(ib, pb)]):
    if isinstance(ev, Step):
        losses.append(ev.loss)
net = result.best_net()
began = checkpoint.load(next(p for p in starts if p.endswith(result.metadata["training"]["from"])))
out = {"code": napari_unet.__file__, "seed": seed, "steps": result.steps_done, "best_step": result.best_step,
       "annotation": result.metadata["training"].get("annotation"), "max_spike": round(max_spike(losses), 2),
       "train_s": round(time.perf_counter() - t0, 1)}
for name, img, truth, painted in ((A, ia, ta, pa), (B, ib, tb, pb)):
    out[name[:8]] = {"starter": round(score("nuclei", truth, painted, predicted_labels(*began, img)), 3),
                     "tuned": round(score("nuclei", truth, painted, predicted_labels(net, result.metadata, img)), 3)}
print(json.dumps(out), flush=True)
