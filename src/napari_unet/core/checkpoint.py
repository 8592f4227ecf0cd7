"""One model file: safetensors weights + the JSON metadata needed to use them again.

The metadata (architecture, normalisation, classes, training settings and history,
validation metrics, package version) is one JSON string under the key "napari_unet" in
the safetensors header, so a model is a single file that no pickle ever touches.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from napari_unet import __version__
from napari_unet.core.io import InputError
from napari_unet.core.model import UNet
from napari_unet.core.normalize import PERCENTILES

METADATA_KEY = "napari_unet"
SUFFIX = ".safetensors"
CLASSES = {2: ["background", "cell"], 3: ["background", "cell", "border"]}


class CheckpointError(InputError):
    """A model file is missing, corrupt or not a napari-unet model."""


def default_metadata(net: UNet) -> dict[str, Any]:
    """The metadata every model file carries; `save` fills in what the caller leaves out."""
    return {
        "architecture": dict(net.config),
        "normalisation": {"percentiles": list(PERCENTILES)},
        "classes": CLASSES.get(net.n_classes, [f"class {i}" for i in range(net.n_classes)]),
        "training": {},
        "validation": {},
        "version": __version__,
    }


def _plain_module(net: torch.nn.Module) -> UNet:
    """The UNet behind a `torch.compile` wrapper (its state dict keys carry no prefix)."""
    return getattr(net, "_orig_mod", net)


def save(path: str | Path, net: torch.nn.Module, metadata: dict[str, Any] | None = None) -> Path:
    """Write ``net`` and ``metadata`` to ``path`` atomically (temp file, then rename).

    "architecture" and "version" always describe ``net`` and this package.
    """
    from safetensors.torch import save_file

    path = Path(path)
    net = _plain_module(net)
    meta = {**default_metadata(net), **(metadata or {})}
    meta["architecture"] = dict(net.config)
    meta["version"] = __version__
    try:
        header = {METADATA_KEY: json.dumps(meta, allow_nan=False)}
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: model metadata is not plain JSON ({exc})") from exc
    tensors = {
        name: tensor.detach().to("cpu", torch.float32).contiguous()
        for name, tensor in net.state_dict().items()
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    try:
        save_file(tensors, str(tmp), metadata=header)
        # safetensors creates its file owner-only (0600); give it the usual umask bits.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata of a model file (or bioimage.io package) without loading its weights."""
    from safetensors import safe_open

    from napari_unet.core import export

    path = Path(path)
    if export.is_package(path):
        return export.read_package_metadata(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such model file")
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types for a bad header
        raise CheckpointError(
            f"{path}: not a readable model file (corrupt or not safetensors: {exc})"
        ) from exc
    if METADATA_KEY not in header:
        raise CheckpointError(
            f"{path}: a safetensors file but not a napari-unet model (no {METADATA_KEY!r} "
            "metadata); train one with napari-unet or pick another file"
        )
    try:
        meta = json.loads(header[METADATA_KEY])
        architecture = dict(meta["architecture"])
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path}: the model's metadata is damaged ({exc})") from exc
    meta["architecture"] = architecture
    return meta


def in_channels(path: str | Path) -> int:
    """How many image channels the model file takes (older files: one)."""
    return int(read_metadata(path)["architecture"].get("in_channels", 1))


def load(path: str | Path, device: str | torch.device = "cpu") -> tuple[UNet, dict[str, Any]]:
    """Rebuild the UNet stored in ``path`` on ``device``, in eval mode, with its metadata.

    ``path`` may also be a bioimage.io package (zip or folder) of a napari-unet U-Net.
    """
    from safetensors.torch import load_file

    from napari_unet.core import export

    path = Path(path)
    if export.is_package(path):
        return export.load_package(path, device)
    meta = read_metadata(path)
    try:
        net = UNet(**meta["architecture"])
    except (TypeError, InputError) as exc:
        raise CheckpointError(
            f"{path}: unknown model architecture {meta['architecture']} ({exc})"
        ) from exc
    try:
        tensors = load_file(str(path), device="cpu")
        net.load_state_dict(tensors, strict=True)
    except Exception as exc:  # truncated data, wrong names or shapes
        raise CheckpointError(
            f"{path}: the model weights are damaged or incomplete ({exc})"
        ) from exc
    return net.to(device).eval(), meta


# --- resume state: the last weights and the optimiser state, beside the model ----------
RESUME_SUFFIX = ".resume.safetensors"


def resume_path(model_path: str | Path) -> Path:
    """Where the resume state of ``model.safetensors`` lives: ``model.resume.safetensors``."""
    path = Path(model_path)
    stem = path.name[: -len(SUFFIX)] if path.name.endswith(SUFFIX) else path.name
    return path.with_name(stem + RESUME_SUFFIX)


def optimizer_tensors(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A torch optimiser ``state_dict()`` as flat tensors + plain JSON (no pickle).

    Tensors become ``state.<param>.<name>``; numbers and the param groups go to JSON.
    """
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, values in state["state"].items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{index}.{name}"] = value.detach().to("cpu").contiguous()
            else:
                scalars.setdefault(str(index), {})[name] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def optimizer_state(tensors: dict[str, torch.Tensor], plain: dict[str, Any]) -> dict[str, Any]:
    """Inverse of `optimizer_tensors`: a ``state_dict()`` torch optimisers load."""
    state: dict[int, dict[str, Any]] = {}
    for key, tensor in tensors.items():
        _, index, name = key.split(".", 2)
        state.setdefault(int(index), {})[name] = tensor
    for index, values in plain.get("scalars", {}).items():
        state.setdefault(int(index), {}).update(values)
    return {"state": state, "param_groups": plain["param_groups"]}


def save_resume(
    path: str | Path,
    weights: dict[str, torch.Tensor],
    optimizer: dict[str, Any],
    info: dict[str, Any] | None = None,
    anchor: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write the last weights and the optimiser state (safetensors, atomic; never pickle).

    A model file keeps the *best* weights; Resume continues from these *last* ones with
    the optimiser's momentum, so that training goes on where it stopped. ``anchor``: the
    weights the run's anchor pulls toward (its first start), kept for the continuation.
    """
    from safetensors.torch import save_file

    path = Path(path)
    opt_tensors, plain = optimizer_tensors(optimizer)
    tensors = {f"weights.{k}": v.detach().to("cpu").contiguous() for k, v in weights.items()}
    tensors.update({f"optimizer.{k}": v for k, v in opt_tensors.items()})
    tensors.update(
        {f"anchor.{k}": v.detach().to("cpu").contiguous() for k, v in (anchor or {}).items()}
    )
    header = {METADATA_KEY: json.dumps({"optimizer": plain, **(info or {})}, allow_nan=False)}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    try:
        save_file(tensors, str(tmp), metadata=header)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def load_resume(
    path: str | Path,
) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any], dict[str, torch.Tensor]]:
    """(last weights, optimiser state_dict, info, anchor weights ({} if none)) written by
    `save_resume`."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no resume state (save the model after training)")
    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = json.loads((handle.metadata() or {})[METADATA_KEY])
        tensors = load_file(str(path), device="cpu")
    except Exception as exc:
        raise CheckpointError(f"{path}: not a readable resume state ({exc})") from exc
    weights = {k[len("weights.") :]: v for k, v in tensors.items() if k.startswith("weights.")}
    opt = {k[len("optimizer.") :]: v for k, v in tensors.items() if k.startswith("optimizer.")}
    anchor = {k[len("anchor.") :]: v for k, v in tensors.items() if k.startswith("anchor.")}
    plain = meta.pop("optimizer")
    return weights, optimizer_state(opt, plain), meta, anchor


# New models predict background / cell / cell border: on real nuclei (DSB2018 half-image
# benchmark, docs/accuracy.md "Accuracy on real images") the border class separated touching
# nuclei and outlined them better than 2 classes plus the weight map alone.
DEFAULT_CLASSES = 3


def classes_to_train(start_from: Any = None) -> int:
    """Classes of the training target: the model's when fine-tuning one (a UNet or a
    model file), else `DEFAULT_CLASSES`."""
    if start_from is None:
        return DEFAULT_CLASSES
    if isinstance(start_from, str | Path):
        return int(read_metadata(start_from)["architecture"]["n_classes"])
    return int(getattr(start_from, "_orig_mod", start_from).n_classes)
