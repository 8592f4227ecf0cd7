"""Post-processing variants on cached starter probabilities (79 held-out fluorescence images)."""
import sys, time
import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import watershed
from napari_unet.core import metrics, postprocess as pp

D = 18.54
z = np.load("/work/exp/s15/probs30.npz")
ids = sorted(k[2:] for k in z.files if k.startswith("p_"))
data = [(z["p_" + i].astype(np.float32), z["t_" + i]) for i in ids]
TH = tuple(np.round(np.arange(0.5, 0.96, 0.05), 2))

def score(fn, n=None):
    aps, sep, tot = [], 0, 0
    for p, t in data[:n]:
        lab = fn(p)
        aps.append(metrics.average_precision(t, lab, TH))
        s, k = metrics.touching_pairs_separated(t, lab); sep += s; tot += k
    a = np.mean(aps, axis=0)
    a30 = np.mean(aps[:30], axis=0)
    return f"all{len(aps)} ap50 {a[0]:.4f} ap75 {a[5]:.4f} map {a.mean():.4f} | first30 ap50 {a30[0]:.4f} ap75 {a30[5]:.4f} map {a30.mean():.4f} | pairs {sep}/{tot}"

def base(p):
    return pp.to_instances(p, diameter_px=D)

def hi_seeds(t_hi, combine_dist=True):
    """Seeds: components of interior > t_hi; cores without one keep themselves; grown on -p_int."""
    def f(p):
        inter = p[1]; cell = 1 - p[0]
        cores, n = ndi.label(inter > 0.5)
        grow_into = (cores > 0) | (cell > 0.5)
        seeds, m = ndi.label(inter > t_hi)
        if combine_dist:
            # within each high seed, distance split as the default
            lab = pp._split_merged(seeds, seeds > 0, D)
            seeds, m = lab, int(lab.max())
        unseeded = (cores > 0) & ~np.isin(cores, np.unique(cores[seeds > 0]))
        if unseeded.any():
            big = np.flatnonzero(np.bincount(cores[unseeded]) >= pp.MIN_SIZE_PX)
            seeds = np.where(unseeded & np.isin(cores, big), cores + m, seeds)
        lab = watershed(-inter, markers=seeds, mask=grow_into)
        return pp._remove_small(lab, pp.MIN_SIZE_PX)
    return f

def default_then_hi(t_hi):
    """Default split; then also split each object by its high-interior components."""
    def f(p):
        inter = p[1]; cell = 1 - p[0]
        lab = pp.to_instances(p, diameter_px=D)
        hi, m = ndi.label(inter > t_hi)
        # for each object, count distinct hi comps (of size >= 12) inside
        sizes = np.bincount(hi.ravel())
        big = sizes >= pp.MIN_SIZE_PX; big[0] = False
        hi = np.where(big[hi], hi, 0)
        pairs = np.unique(np.stack([lab[hi > 0], hi[hi > 0]]), axis=1)
        objs, counts = np.unique(pairs[0], return_counts=True)
        multi = objs[counts > 1]
        if len(multi) == 0:
            return lab
        region = np.isin(lab, multi)
        markers = np.where(region & (hi > 0), hi + lab.max(), 0)
        # keep other parts of multi objects: grow markers within each object
        sub = watershed(-inter, markers=markers, mask=region)
        # prevent crossing objects: labels only within same object (watershed could cross between adjacent multi objects)
        out = np.where(region, sub, lab)
        return pp._remove_small(out.astype(np.int64), pp.MIN_SIZE_PX)
    return f

variants = {"base": base}
for t in (0.6, 0.7, 0.8, 0.9):
    variants[f"hi{t}"] = hi_seeds(t)
    variants[f"def_then_hi{t}"] = default_then_hi(t)

def strict(bc, landscape="dist"):
    def f(p):
        inter, border = p[1], p[2]; cell = 1 - p[0]
        cores, n = ndi.label(inter > 0.5)
        grow_into = (cores > 0) | (cell > 0.5)
        sc, m = ndi.label((inter > 0.5) & (border < bc))
        lab = pp._split_merged(sc, grow_into | (cores > 0), D)
        # cores with no strict seed keep themselves
        unseeded = (cores > 0) & ~np.isin(cores, np.unique(cores[lab > 0]))
        lab = np.where(unseeded, cores + lab.max(), lab)
        return pp._remove_small(lab, pp.MIN_SIZE_PX)
    return f
for bc in (0.2, 0.25, 0.3, 0.35, 0.4, 0.45):
    variants[f"strict{bc}"] = strict(bc)

names = sys.argv[1:] or list(variants)
for name in names:
    t0 = time.time()
    print(name, score(variants[name]), f"{time.time()-t0:.0f}s", flush=True)
import numpy as np
from napari_unet.core import metrics, postprocess as pp
z = np.load("/work/exp/s15/probs30.npz")
ids = sorted(k[2:] for k in z.files if k.startswith("p_"))
cat = dict(tp=0, fn_merged=0, fn_bad_shape=0, fn_missed=0, fp_split=0, fp_shape=0, fp_empty=0)
small_missed = []
for i in ids:
    p = z["p_" + i].astype(np.float32); t = z["t_" + i]
    lab = pp.to_instances(p, diameter_px=18.54)
    gi, pi = np.unique(t)[1:], np.unique(lab)[1:]
    # overlap matrix
    ov = np.zeros((t.max() + 1, lab.max() + 1), np.int64)
    np.add.at(ov, (t.ravel(), lab.ravel()), 1)
    ga = ov.sum(1); pa = ov.sum(0)
    iou = ov / (ga[:, None] + pa[None, :] - ov + 1e-9)
    iou[0, :] = 0; iou[:, 0] = 0
    gm = iou.max(1) >= 0.5; pm = iou.max(0) >= 0.5
    for g in gi:
        if gm[g]: cat["tp"] += 1; continue
        best = ov[g, 1:].argmax() + 1 if ov[g, 1:].any() else 0
        if best == 0 or ov[g, best] < 0.3 * ga[g]:
            cat["fn_missed"] += 1; small_missed.append(ga[g])
        else:
            # does best pred cover another gt substantially?
            others = ov[1:, best].copy(); others[g - 1] = 0
            if others.max() > 0.3 * ga[1:][others.argmax()]: cat["fn_merged"] += 1
            else: cat["fn_bad_shape"] += 1
    for q in pi:
        if pm[q]: continue
        best = ov[1:, q].argmax() + 1
        if ov[best, q] < 0.3 * pa[q]: cat["fp_empty"] += 1
        elif gm[best]: cat["fp_split"] += 1
        else: cat["fp_shape"] += 1
print(cat)
print("missed sizes median", np.median(small_missed), np.percentile(small_missed, [10, 90]))
import numpy as np
from scipy import ndimage as ndi
from napari_unet.core import postprocess as pp
z = np.load("/work/exp/s15/probs30.npz")
ids = sorted(k[2:] for k in z.files if k.startswith("p_"))
rows_m, rows_s = [], []
for i in ids:
    p = z["p_" + i].astype(np.float32); t = z["t_" + i]
    lab = pp.to_instances(p, diameter_px=18.54)
    # contact pixels: gt pixel whose 3x3 neighbourhood holds another gt id
    mx = ndi.maximum_filter(t, 3); mn = ndi.minimum_filter(np.where(t == 0, 65535, t), 3)
    contact = (t > 0) & ((mx != t) | (mn != t)) & (mx > 0) & (mn < 65535)
    a = np.where(contact, t, 0); b = np.where(contact, np.where(mx != t, mx, mn), 0)
    pairs = set(zip(a[contact].tolist(), b[contact].tolist()))
    pairs = {tuple(sorted(x)) for x in pairs if x[0] != x[1]}
    for g1, g2 in pairs:
        line = contact & (((t == g1) & (b == g2)) | ((t == g2) & (b == g1)))
        if line.sum() < 2: continue
        l1 = np.bincount(lab[t == g1]).argmax(); l2 = np.bincount(lab[t == g2]).argmax()
        merged = l1 == l2 and l1 > 0
        r = (p[0][line].mean(), p[1][line].mean(), p[2][line].max(), p[2][line].mean(), line.sum())
        (rows_m if merged else rows_s).append(r)
rm, rs = np.array(rows_m), np.array(rows_s)
print("merged", len(rm), "sep", len(rs))
for name, r in (("merged", rm), ("separated", rs)):
    print(name, "bg %.2f int %.2f border max %.2f mean %.2f len %.1f" % tuple(r.mean(0)))
    print("  border max quantiles", np.percentile(r[:, 2], [10, 25, 50, 75, 90]).round(2))
