import sys, numpy as np
sys.path.insert(0, "/work/main/benchmarks")
import bench_sparse as b
from napari_unet.core import io
root = "/work/shared/data/real/dsb2018"
name, k = sys.argv[1], int(sys.argv[2])
truth = io.read(f"{root}/labels/{name}.tif")
painted = b.paint(truth, k, 0)
for which in ("start", "tuned"):
    gt, p = b.rest(truth, painted, np.load(f"{name[:8]}_{k}_{which}.npy"))
    bad = []
    for g in np.unique(gt)[1:]:
        m = gt == g
        ov = np.bincount(p[m].ravel()); ov[0] = 0; q = ov.argmax()
        inter = ov[q]; union = m.sum() + (p == q).sum() - inter if q else m.sum()
        iou = inter / union
        if iou < 0.5:
            ys, xs = np.nonzero(m)
            n_gt_in_q = len(np.unique(gt[p == q])) - 1 if q else 0
            bad.append((int(g), round(float(iou), 2), int(m.sum()), int((p == q).sum()) if q else 0, n_gt_in_q, int(ys.mean()), int(xs.mean())))
    print(which, len(bad), bad)
