"""Widen the shipped light nuclei starter (16 base channels) to WIDTH, function-preserving:
old channels keep their weights, new channels get He-init incoming weights and zero
outgoing weights, so the wide net computes exactly what the narrow one did at step 0."""
import sys, math
import torch
from napari_unet.core import checkpoint
from napari_unet.core.model import UNet
from napari_unet.models import starter_model_path

WIDTH = int(sys.argv[1]); out = sys.argv[2]
net, meta = checkpoint.load(starter_model_path())
cfg = dict(net.config); old_c = cfg["base_channels"]; cfg["base_channels"] = WIDTH
torch.manual_seed(0)
wide = UNet(**cfg)
depth = cfg["depth"]; f = WIDTH // old_c
def idx_plain(c_old):  # old channel positions in the new layer
    return torch.arange(c_old)
def idx_cat(c_old):  # [skip c | up c] -> [skip c_new | up c_new]
    return torch.cat([torch.arange(c_old), c_old * f + torch.arange(c_old)])
sd_old, sd_new = net.state_dict(), wide.state_dict()
for k, w_old in sd_old.items():
    w_new = sd_new[k].clone()
    if k == "head.weight":
        w_new.zero_(); w_new[:, : w_old.shape[1]] = w_old
    elif k == "head.bias":
        w_new = w_old.clone()
    elif k.endswith("bias"):
        w_new[: w_old.shape[0]] = w_old  # new channels keep zero bias
    elif k.startswith("upconv"):  # (in, out, 2, 2): out widened, in widened
        w_new[:, :, :, :] = w_new * 0.5
        w_new[w_old.shape[0]:, :] = 0  # outgoing from new input channels
        w_new[: w_old.shape[0], : w_old.shape[1]] = w_old
    else:  # conv (out, in, 3, 3)
        o, i = w_old.shape[:2]
        cat = k.startswith("up.") and k.split(".")[2] == "0"
        ins = idx_cat(i // 2) if cat else idx_plain(i)
        keep_in = torch.zeros(w_new.shape[1], dtype=torch.bool); keep_in[ins] = True
        w_new[:, ~keep_in] = 0  # outgoing weights of new channels
        w_new[: o][:, ins] = w_old
        # ... wait: w_new[:o][:, ins] = is a copy; assign properly below
        tmp = w_new[:o].clone(); tmp[:, ins] = w_old; w_new[:o] = tmp
        if k == "down.0.0.weight":
            pass
    sd_new[k] = w_new
wide.load_state_dict(sd_new)
x = torch.rand(1, 1, 188, 188)
with torch.no_grad():
    d = (wide.eval()(x) - net.eval()(x)).abs().max().item()
print("max diff", d)
assert d < 1e-4
checkpoint.save(out, wide, meta)
print("saved", out)
