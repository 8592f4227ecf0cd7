"""The named choices of every front end, each defined once: model sizes, their training
defaults, devices and optimisers. The CLI's ``choices=``, the docks' combo boxes and the
core all read these tables. Torch-free, so a dock can fill its controls without torch.
"""

from __future__ import annotations

from typing import Any

LIGHT, PAPER = "light", "paper"

# Ronneberger et al. 2015, Fig. 1: 64 channels at the top level, doubled per level down
# to 1024 at the 5th; a 572x572 input tile gives a 388x388 output; dropout 0.5 at the end
# of the contracting path (section 3).
PAPER_BASE_CHANNELS = 64
PAPER_DEPTH = 5
PAPER_DROPOUT = 0.5

# Named model sizes: keyword arguments of `model.UNet`. "light" is the CPU default, chosen
# by measuring steps/s and validation IoU within a 10-minute run on 2 CPU cores
# (benchmarks/bench_train.py).
MODEL_PRESETS: dict[str, dict[str, Any]] = {
    LIGHT: {"base_channels": 16, "depth": 4, "dropout": 0.1},
    PAPER: {"base_channels": PAPER_BASE_CHANNELS, "depth": PAPER_DEPTH, "dropout": PAPER_DROPOUT},
}
# How the docks name each size ("new <title> model") and what it is for.
PRESET_TITLES = {LIGHT: "light", PAPER: "paper-size"}
PRESET_HELP = {LIGHT: "fast on a CPU", PAPER: "the 2015 U-Net, for a GPU"}

# Per-preset training defaults (chosen by benchmarks/bench_train.py and bench_accuracy.py):
# input tile side (pixels), tiles per step and steps. The light model does ~25 steps/s on
# 2 free CPU cores, so 5000 steps take ~4-5 minutes; measured against 2500 steps they
# raise AP@0.9 on synthetic cells from 0.89 to 0.92. `max_minutes` keeps a slower or busy
# machine within 10 minutes.
TRAINING_PRESETS: dict[str, dict[str, Any]] = {
    LIGHT: {"tile_size": 188, "batch_size": 1, "steps": 5000, "validate_every": 250},
    PAPER: {"tile_size": 572, "batch_size": 4, "steps": 3000, "validate_every": 200},
}

AUTO = "auto"  # device: CUDA, else MPS, else CPU
DEVICES = (AUTO, "cpu", "cuda", "mps")

ADAMW, SGD = "adamw", "sgd"  # SGD with momentum 0.99: the paper's (section 3)
OPTIMIZERS = (ADAMW, SGD)
DEFAULT_LR = {ADAMW: 2e-3, SGD: 1e-2}  # peak learning rate
# Fine-tuning stays near the model it started from: after every step each weight is
# pulled back toward its starting value by lr x ANCHOR x (w - w0) (a decoupled L2-SP,
# Li et al. 2018). With Adam's steps of about lr, no weight drifts much more than
# 1 / ANCHOR from its start, so a few annotated cells (or boxes without a cell) cannot
# throw away what the starter knew. Chosen in benchmarks/bench_sparse.py and the
# annotate-next loop of bench_confidence.py (README, Train).
ANCHOR = 20.0
# ...unless the start model does not find the annotated cells yet: below this validation
# IoU before the first step, the default anchor is let go (README, Train).
ANCHOR_MIN_IOU = 0.5
# Choosing the start on a colour / multi-channel image: a starter trained on that many
# channels wins unless a one-channel starter spread over them finds the annotated cells
# better by this validation IoU. The spread one's first layer is only a contrast-weighted
# guess and must be relearnt: on stained RGB (README, Channels) they started 0.73 vs 0.72
# and ended AP@0.5 0.662 vs 0.757 after fine-tuning.
EXACT_CHANNELS_MARGIN = 0.1


def default_preset(device: Any = "cpu") -> str:
    """The paper width on a CUDA GPU, the light model elsewhere (a CPU step must stay short).

    ``device``: a torch.device or its name ("cuda:1").
    """
    kind = getattr(device, "type", str(device).split(":")[0])
    return PAPER if kind == "cuda" else LIGHT
