import sys, json, numpy as np
sys.path.insert(0, "/work/main/benchmarks")
import bench_sparse as b
from napari_unet.core import io, checkpoint, metrics
from napari_unet.models import shipped_models
root = "/work/shared/data/real/dsb2018"
name, k = sys.argv[1], int(sys.argv[2])
image = io.read(f"{root}/images/{name}.tif"); image = image[..., 0] if image.ndim == 3 else image
truth = io.read(f"{root}/labels/{name}.tif")
painted = b.paint(truth, k, 0)
starter = next(str(m.path) for m in shipped_models() if m.path.name == "starter.safetensors")
result, losses, s = b.fine_tune(image, painted, 2.0, 0, None, None, [starter])
tuned = b.predicted_labels(result.best_net(), result.metadata, image)
start = b.predicted_labels(*checkpoint.load(starter), image)
np.save(f"/work/exp/s14/{name[:8]}_{k}_tuned.npy", tuned); np.save(f"/work/exp/s14/{name[:8]}_{k}_start.npy", start)
def kinds(pred):
    gt, p = b.rest(truth, painted, pred)
    ap = metrics.average_precision(gt, p, (0.5,))[0]
    # per GT object: best-overlap pred; merges = pred objects overlapping >=2 GT by >30% of GT
    gids = np.unique(gt)[1:]; pids = np.unique(p)[1:]
    merged = 0; missed = 0
    for g in gids:
        m = gt == g; ov = np.bincount(p[m].ravel()); ov[0] = 0
        if ov.max() < 0.5 * m.sum(): missed += 1
    split = 0; fp = 0
    for q in pids:
        m = p == q; ov = np.bincount(gt[m].ravel(), minlength=1); bg = ov[0]; ov[0] = 0
        if (ov > 0.3 * m.sum()).sum() >= 2: merged += 1
        if ov.max() < 0.3 * m.sum(): fp += 1
    return dict(ap=round(float(ap), 3), n_gt=len(gids), n_pred=len(pids), gt_not_half_covered=missed, merges=merged, false_pos=fp,
                mean_area_pred=float(np.mean([np.sum(p == q) for q in pids])), mean_area_gt=float(np.mean([np.sum(gt == g) for g in gids])))
print(json.dumps({"start": kinds(start), "tuned": kinds(tuned), "steps": result.steps_done, "best": result.best_step}), flush=True)
