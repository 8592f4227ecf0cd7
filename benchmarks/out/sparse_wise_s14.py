"""Fine-tune (defaults, teacher on), then score weight interpolations starter->tuned."""
import sys, json, copy, numpy as np, torch
sys.path.insert(0, "/work/main/benchmarks")
import bench_sparse as b
from napari_unet.core import io, checkpoint
from napari_unet.models import shipped_models
root = "/work/shared/data/real/dsb2018"
starter = next(str(m.path) for m in shipped_models() if m.path.name == "starter.safetensors")
s_net, s_meta = checkpoint.load(starter)
for case in sys.argv[1:]:
    name, k = case.split(":"); k = int(k)
    image = io.read(f"{root}/images/{name}.tif"); image = image[..., 0] if image.ndim == 3 else image
    truth = io.read(f"{root}/labels/{name}.tif")
    painted = b.paint(truth, k, 0)
    result, losses, s = b.fine_tune(image, painted, 2.0, 0, None, None, [starter])
    best = result.best_net()
    last = copy.deepcopy(best); last.load_state_dict(result.resume.weights)
    out = {"case": case, "steps": result.steps_done, "best": result.best_step}
    sd0 = s_net.state_dict()
    for tag, tuned, alphas in (("best", best, (0.0, 0.5, 0.75, 1.0)), ("last", last, (0.5, 1.0))):
        sd1 = tuned.state_dict()
        for a in alphas:
            net = copy.deepcopy(tuned)
            net.load_state_dict({k_: (1 - a) * sd0[k_].float() + a * sd1[k_].float() if sd1[k_].is_floating_point() else sd1[k_] for k_ in sd1})
            lab = b.predicted_labels(net, result.metadata, image)
            out[f"{tag}_{a}"] = round(b.score("nuclei", truth, painted, lab), 3)
    print(json.dumps(out), flush=True)
