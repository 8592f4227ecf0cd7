"""Average the weights of starter files of one lineage (a model soup / SWA check)."""
import sys, torch
from napari_unet.core import checkpoint
out, files = sys.argv[1], sys.argv[2:]
nets = [checkpoint.load(f) for f in files]
net, meta = nets[0]
state = {k: sum(n.state_dict()[k].float() for n, _ in nets) / len(nets) for k in net.state_dict()}
state = {k: v.to(net.state_dict()[k].dtype) for k, v in state.items()}
net.load_state_dict(state)
meta.setdefault("starter", {})["soup"] = [f.split("/")[-1] for f in files]
checkpoint.save(out, net, meta)
