"""bioimage.io model packages (spec 0.5): export a napari-unet model, import one back.

Export writes `pytorch_state_dict` weights with a self-contained copy of `model.py` as
the architecture, TorchScript and ONNX weights, test tensors and a cover from a real
prediction, and a documentation page; then it checks the package offline with
`bioimageio.spec` and `bioimageio.core` (optional extra ``export``). Import needs no
bioimageio install: it reads the rdf.yaml, checks the weights' sha256 and rebuilds the
`UNet`. Not a model zoo client: nothing is uploaded or downloaded.
"""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import io
import re
import tempfile
import warnings
import zipfile
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_unet import __version__
from napari_unet.core.events import Done
from napari_unet.core.io import InputError

RDF_NAMES = ("rdf.yaml", "bioimageio.yaml")
ARCHITECTURE_FILE = "unet_architecture.py"
# The exported callable, and the callables an imported package may name: napari-unet's
# own classes (same keyword arguments and state dict keys).
EXPORT_CALLABLE = "MirroredUNet"
KNOWN_CALLABLES = ("MirroredUNet", "UNet")
KNOWN_LIBRARY = "napari_unet.core.model"
INPUT_ID, OUTPUT_ID = "raw", "probabilities"
ONNX_OPSET = 17
TEST_MIN_PX = 128  # the test tensor's edge is the smallest admissible size >= this
DEFAULT_LICENSE = "CC-BY-4.0"
PLUGIN_URL = "https://pypi.org/project/napari-unet/"
CITATIONS = [
    {
        "text": "Ronneberger, O., Fischer, P. & Brox, T. U-Net: Convolutional Networks for "
        "Biomedical Image Segmentation. MICCAI 2015, LNCS 9351, 234-241.",
        "doi": "10.1007/978-3-319-24574-4_28",
    },
    {"text": f"napari-unet {__version__}: U-Net for napari", "url": PLUGIN_URL},
]
TAGS = ["unet", "segmentation", "instance-segmentation", "cells", "2d", "fluorescence-light-microscopy", "pytorch", "napari-unet"]  # fmt: skip
_LOCAL_INPUT_ERROR = 'class InputError(ValueError):\n    """Bad input (e.g. a tile size the U-Net cannot take)."""\n'
_CLASS_NAME = re.compile(r"^class (\w+)\(", re.MULTILINE)


@dataclass(frozen=True)
class ExportResult:
    """The written package, its weight formats, and what the bioimageio test run said."""

    path: Path
    weight_formats: list[str]
    test_status: str | None  # "passed", "failed" or None (not checked)
    notes: list[str] = field(default_factory=list)


def _error(message: str) -> Exception:
    from napari_unet.core.checkpoint import CheckpointError

    return CheckpointError(message)


# --- export ---------------------------------------------------------------------------


def architecture_source() -> str:
    """`model.py` made self-contained: each ``from napari_unet... import`` becomes local
    definitions (`InputError`, constants by value). The package's architecture file."""
    import ast
    import importlib

    from napari_unet.core import model

    text = Path(model.__file__).read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    imports = [
        node
        for node in ast.parse(text).body
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("napari_unet")
    ]
    for node in reversed(imports):
        module = importlib.import_module(node.module)
        local = []
        for alias in node.names:
            value = getattr(module, alias.name)
            if alias.name == "InputError":
                local.append(_LOCAL_INPUT_ERROR)
            elif isinstance(value, str | int | float | dict | tuple | list):
                local.append(f"{alias.asname or alias.name} = {value!r}\n")
            else:
                raise RuntimeError(f"model.py imports {alias.name}; export cannot inline it")
        lines[node.lineno - 1 : node.end_lineno] = local
    header = f"# Exported by napari-unet {__version__}: a copy of napari_unet/core/model.py.\n"
    return header + "".join(lines)


def halo_px(net: Any) -> int:
    """Output pixels a tiling consumer crops from each tile side (see `halo_geometry`)."""
    from napari_unet.core.model import halo_geometry

    return halo_geometry(net.depth, net.config["padding"]).halo


def _admissible(net: Any, n: int) -> bool:
    """Whether `MirroredUNet` takes a tile edge of ``n`` px (and a halo can be cropped)."""
    from napari_unet.core.model import halo_geometry

    g = halo_geometry(net.depth, net.config["padding"])
    if n <= 2 * g.halo or n % 2 ** (net.depth - 1):
        return False
    try:
        net.output_size(n + g.pad_before + g.pad_after)
    except InputError:
        return False
    return True


def size_rule(net: Any) -> tuple[int, int]:
    """(min, step) of the admissible input edges: every ``min + k * step`` px works."""
    step = 2 ** (net.depth - 1)
    smallest = next(n for n in range(1, 1 << 16) if _admissible(net, n))
    return smallest, step


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _test_image(channels: int, size: int) -> np.ndarray:
    """(C, Y, X) synthetic touching cells; extra channels are other renderings of them."""
    from napari_unet.core.synthetic import touching_cells

    planes = [touching_cells((size, size), seed=c)[0] for c in range(channels)]
    return (np.stack(planes) * 1000.0).astype(np.float32)  # camera-like range


def _probabilities(net: Any, image: np.ndarray, percentiles: list[float]) -> np.ndarray:
    """The package's output for ``image`` (C, Y, X): percentile scaling, ``net``, softmax."""
    import torch

    from napari_unet.core.normalize import normalize

    x = np.stack([normalize(plane, tuple(percentiles)) for plane in image])
    with torch.no_grad():
        return torch.softmax(net(torch.from_numpy(x[None])), dim=1)[0].numpy()


def _cover(image: np.ndarray, probabilities: np.ndarray, path: Path) -> None:
    """Image (left) and cell probability over it (right): a 2:1 PNG."""
    import imageio.v3 as iio

    gray = image.mean(axis=0)
    lo, hi = np.percentile(gray, (1, 99.8))
    gray = np.clip((gray - lo) / max(hi - lo, 1e-6), 0, 1)
    cell = probabilities[1]
    left = np.stack([gray] * 3, axis=-1)
    right = np.stack([gray * (1 - cell) + cell, gray * (1 - cell), gray * (1 - cell) + cell], -1)
    iio.imwrite(path, (np.concatenate([left, right], axis=1) * 255).round().astype(np.uint8))


def _documentation(name: str, metadata: dict, size: tuple[int, int], margin: int) -> str:
    arch = metadata["architecture"]
    training = metadata.get("training") or {}
    validation = metadata.get("validation") or {}
    lo, hi = metadata["normalisation"]["percentiles"]
    lines = [
        f"# {name}",
        "",
        "A U-Net (Ronneberger, Fischer & Brox 2015) for cell segmentation, trained and "
        f"exported with napari-unet {__version__}.",
        "",
        "## Model",
        "",
        f"- Architecture: {arch['depth']} levels, {arch['base_channels']} channels at the "
        f"top, {arch['padding']} 3x3 convolutions, {arch['in_channels']} input channel(s), "
        f"{arch['n_classes']} classes ({', '.join(metadata['classes'])}).",
        f"- Input: (batch, channel, y, x), each channel scaled so its {lo} and {hi} "
        "percentiles map to 0 and 1 (`scale_range`).",
        "- Output: per-class softmax probabilities, same size as the input.",
        f"- Tiling: tile edges of {size[0]} + k * {size[1]} px; pad the image by the halo "
        f"({margin} px, mirror) and crop it from every tile. The tiles then give exactly "
        "napari-unet's seamless overlap-tile prediction (Ronneberger et al. 2015, Fig. 2).",
        "",
        "## Training",
        "",
    ]
    shown = {k: v for k, v in training.items() if not isinstance(v, list | dict)}
    lines += [f"- {k}: {v}" for k, v in shown.items()] or ["- (not recorded)"]
    if validation:
        lines += ["", "Validation: " + ", ".join(f"{k} {v}" for k, v in validation.items())]
    lines += [
        "",
        "## Use",
        "",
        "In napari-unet: open this package in the Predict or Train dock, or run "
        "`napari-unet predict PACKAGE.zip IMAGE -o LABELS.tif`. Labels: threshold the "
        "'cell' probability (0.5) and label connected components.",
        "",
        "## Cite",
        "",
        *[f"- {c['text']} " + (f"doi:{c['doi']}" if "doi" in c else c["url"]) for c in CITATIONS],
        "",
    ]
    return "\n".join(lines)


def _axes(net: Any, size: tuple[int, int], metadata: dict) -> tuple[list, list]:
    channels = net.in_channels
    in_names = ["raw"] if channels == 1 else [f"channel{i}" for i in range(channels)]
    classes = [re.sub(r"\W", "_", c) for c in metadata["classes"]]
    space_in = [
        {"type": "space", "id": a, "size": {"min": size[0], "step": size[1]}} for a in "yx"
    ]
    space_out = [
        {
            "type": "space",
            "id": a,
            "size": {"tensor_id": INPUT_ID, "axis_id": a},
            "halo": halo_px(net),
        }
        for a in "yx"
    ]
    inputs = [{"type": "batch"}, {"type": "channel", "channel_names": in_names}, *space_in]
    outputs = [{"type": "batch"}, {"type": "channel", "channel_names": classes}, *space_out]
    return inputs, outputs


def _clean_name(text: str) -> str:
    name = re.sub(r"[^A-Za-z0-9 _\-]", " ", text).strip()
    return re.sub(r"\s+", " ", name) or "napari-unet U-Net"


def _require_bioimageio() -> None:
    try:
        import bioimageio.core  # noqa: F401
    except ImportError as exc:
        raise InputError(
            "exporting a bioimage.io package needs the optional packages: "
            "pip install 'napari-unet[export]'"
        ) from exc


def export_iter(
    net: Any,
    metadata: dict,
    output: str | Path,
    name: str | None = None,
    description: str | None = None,
    authors: list[str] | None = None,
    license: str = DEFAULT_LICENSE,
    onnx: bool = True,
    check: bool = True,
) -> Generator[Done, None, ExportResult]:
    """Write ``net`` (+ its model-file ``metadata``) as a bioimage.io package zip at ``output``.

    Yields `Done` after each stage; returns an `ExportResult`. With ``check`` the package
    is validated and test-run by bioimageio.core (every weight format on the test tensors);
    a failure raises `CheckpointError` and leaves no package behind.
    """
    import torch

    from napari_unet.core.checkpoint import default_metadata
    from napari_unet.core.model import MirroredUNet

    output = Path(output)
    if output.suffix.lower() != ".zip":
        raise InputError(f"{output}: a bioimage.io package is a .zip file")
    _require_bioimageio()
    net = getattr(net, "_orig_mod", net)
    metadata = {**default_metadata(net), **metadata, "architecture": dict(net.config)}
    mirrored = MirroredUNet(**net.config)  # a CPU copy; the caller's net is untouched
    mirrored.load_state_dict(net.state_dict())
    mirrored.eval()
    size = size_rule(mirrored)
    edge = size[0] + size[1] * max(0, -(-(TEST_MIN_PX - size[0]) // size[1]))
    percentiles = [float(p) for p in metadata["normalisation"]["percentiles"]]
    name = _clean_name(name or f"napari-unet U-Net {output.stem}")
    total = 5 if check else 4
    notes: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / ARCHITECTURE_FILE).write_text(architecture_source(), encoding="utf-8")
        torch.save({k: v.detach().cpu() for k, v in mirrored.state_dict().items()}, root / "weights.pt")  # fmt: skip
        image = _test_image(net.in_channels, edge)
        probabilities = _probabilities(mirrored, image, percentiles)
        np.save(root / "test_input.npy", image[None])
        np.save(root / "test_output.npy", probabilities[None].astype(np.float32))
        _cover(image, probabilities, root / "cover.png")
        yield Done(1, total)
        example = torch.from_numpy(image[None])
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer warnings about the size checks
            torch.jit.trace(mirrored, example).save(str(root / "weights_torchscript.pt"))
        yield Done(2, total)
        formats = ["pytorch_state_dict", "torchscript"]
        if onnx:
            try:
                _export_onnx(mirrored, example, root / "weights.onnx")
                formats.append("onnx")
            except Exception as exc:  # the exporter is optional; say why it was left out
                notes.append(f"ONNX weights left out: {type(exc).__name__}: {exc}")
        yield Done(3, total)
        (root / "README.md").write_text(
            _documentation(name, metadata, size, halo_px(mirrored)), encoding="utf-8"
        )
        rdf = _rdf(mirrored, metadata, root, name, description, authors, license, size, formats)
        _write_package(rdf, root, output)
        yield Done(4, total)
    status = None
    if check:
        summary = test_package(output)
        status = summary.status
        if status != "passed":
            output.unlink(missing_ok=True)
            raise _error(f"{output}: the bioimage.io test run failed: {_first_error(summary)}")
        yield Done(5, total)
    return ExportResult(output, formats, status, notes)


def export_file(model: str | Path, output: str | Path, **kwargs: Any) -> Generator:
    """`export_iter` for a model file written by `checkpoint.save` (or another package)."""
    from napari_unet.core import checkpoint

    net, metadata = checkpoint.load(model)
    return (yield from export_iter(net, metadata, output, **kwargs))


def _export_onnx(net: Any, example: Any, path: Path) -> None:
    import torch

    dynamic = {0: "batch", 2: "y", 3: "x"}
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            (example,),
            str(path),
            dynamo=False,  # the TorchScript-based exporter: no onnxscript needed
            opset_version=ONNX_OPSET,
            input_names=[INPUT_ID],
            output_names=[OUTPUT_ID],
            dynamic_axes={INPUT_ID: dynamic, OUTPUT_ID: dynamic},
        )


def _rdf(net, metadata, root, name, description, authors, license, size, formats) -> dict:
    import torch

    torch_version = torch.__version__.split("+")[0]
    axes_in, axes_out = _axes(net, size, metadata)
    lo, hi = metadata["normalisation"]["percentiles"]
    weights: dict[str, Any] = {
        "pytorch_state_dict": {
            "source": "weights.pt",
            "sha256": _sha256(root / "weights.pt"),
            "architecture": {
                "source": ARCHITECTURE_FILE,
                "sha256": _sha256(root / ARCHITECTURE_FILE),
                "callable": EXPORT_CALLABLE,
                "kwargs": dict(net.config),
            },
            "pytorch_version": torch_version,
        },
        "torchscript": {
            "source": "weights_torchscript.pt",
            "sha256": _sha256(root / "weights_torchscript.pt"),
            "parent": "pytorch_state_dict",
            "pytorch_version": torch_version,
        },
    }
    if "onnx" in formats:
        weights["onnx"] = {
            "source": "weights.onnx",
            "sha256": _sha256(root / "weights.onnx"),
            "parent": "pytorch_state_dict",
            "opset_version": ONNX_OPSET,
        }
    arch = metadata["architecture"]
    return {
        "type": "model",
        "format_version": "0.5.4",
        "name": name,
        "description": description
        or f"U-Net (Ronneberger et al. 2015) for cell segmentation, {arch['depth']} levels, "
        f"{arch['base_channels']} base channels, {arch['padding']} convolutions; "
        "exported by napari-unet.",
        "authors": [{"name": a} for a in (authors or [getpass.getuser()])],
        "cite": CITATIONS,
        "license": license,
        "tags": TAGS,
        "covers": ["cover.png"],
        "documentation": "README.md",
        "inputs": [
            {
                "id": INPUT_ID,
                "description": "raw image; any intensity range (normalised by percentiles)",
                "axes": axes_in,
                "test_tensor": {
                    "source": "test_input.npy",
                    "sha256": _sha256(root / "test_input.npy"),
                },  # fmt: skip
                "data": {"type": "float32"},
                "pad": {"mode": "reflect"},  # consumers extend borders as napari-unet does
                "preprocessing": [
                    {
                        "id": "scale_range",
                        "kwargs": {"axes": ["y", "x"], "min_percentile": lo, "max_percentile": hi},
                    }
                ],
            }
        ],
        "outputs": [
            {
                "id": OUTPUT_ID,
                "description": "softmax probability of each class",
                "axes": axes_out,
                "test_tensor": {
                    "source": "test_output.npy",
                    "sha256": _sha256(root / "test_output.npy"),
                },  # fmt: skip
                "data": {"type": "float32", "range": [0.0, 1.0]},
                "postprocessing": [{"id": "softmax", "kwargs": {"axis": "channel"}}],
            }
        ],
        "weights": weights,
        "config": {"napari_unet": metadata},
    }


@contextlib.contextmanager
def offline() -> Iterator[None]:
    """bioimageio validation without the network: our own URLs count as known, quiet logs."""
    from bioimageio.spec import ValidationContext
    from loguru import logger

    logger.disable("bioimageio")
    try:
        with ValidationContext(known_files={PLUGIN_URL: None}), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # packaging chatter, e.g. about relative sources
            yield
    finally:
        logger.enable("bioimageio")


def _write_package(rdf: dict, root: Path, output: Path) -> None:
    import yaml
    from bioimageio.spec import InvalidDescr, load_description, save_bioimageio_package

    (root / "rdf.yaml").write_text(yaml.safe_dump(rdf, sort_keys=False), encoding="utf-8")
    with offline():
        descr = load_description(root / "rdf.yaml", perform_io_checks=True)
        if isinstance(descr, InvalidDescr):
            raise _error(f"the package does not validate: {_first_error(descr.validation_summary)}")  # fmt: skip
        output.parent.mkdir(parents=True, exist_ok=True)
        partial = output.with_name(f".{output.name}.partial.zip")
        try:
            save_bioimageio_package(descr, output_path=partial)
            partial.replace(output)
        finally:
            partial.unlink(missing_ok=True)


def test_package(path: str | Path, weight_format: str | None = None) -> Any:
    """bioimageio.core's model test (spec validation + every weight format on the test
    tensors), offline. Returns its `ValidationSummary` (``.status``: "passed"/"failed")."""
    from bioimageio.core import test_model

    with offline():
        return test_model(Path(path), weight_format=weight_format)


test_package.__test__ = False  # not a pytest test


def _first_error(summary: Any) -> str:
    for detail in summary.details:
        for error in detail.errors:
            return f"{'.'.join(map(str, error.loc))}: {error.msg}".strip(": ")
        if detail.status == "failed":
            return detail.name
    return "unknown error"


# --- import ---------------------------------------------------------------------------


def is_package(path: str | Path) -> bool:
    """A .zip, a folder holding an rdf.yaml, or the rdf.yaml itself."""
    path = Path(path)
    if path.is_dir():
        return any((path / n).is_file() for n in RDF_NAMES)
    return path.suffix.lower() == ".zip" or path.name.endswith(RDF_NAMES)


class _Package:
    """Read access to the files of a package (zip or folder) by their rdf-relative names."""

    def __init__(self, path: Path) -> None:
        import yaml

        self.path = path
        self._zip: zipfile.ZipFile | None = None
        if path.is_file() and path.suffix.lower() == ".zip":
            try:
                self._zip = zipfile.ZipFile(path)
            except (zipfile.BadZipFile, OSError) as exc:
                raise _error(f"{path}: not a readable zip file ({exc})") from exc
            names = set(self._zip.namelist())
            rdf_name = next((n for n in RDF_NAMES if n in names), None)
            self.root = None
        else:
            if not path.exists():
                raise _error(f"{path}: no such model package")
            self.root = path if path.is_dir() else path.parent
            rdf_name = path.name if path.is_file() else next(
                (n for n in RDF_NAMES if (path / n).is_file()), None
            )  # fmt: skip
        if rdf_name is None:
            raise _error(f"{path}: not a bioimage.io package (no rdf.yaml inside)")
        try:
            self.rdf = yaml.safe_load(self.read(rdf_name))
        except yaml.YAMLError as exc:
            raise _error(f"{path}: rdf.yaml is not valid YAML ({exc})") from exc
        if not isinstance(self.rdf, dict):
            raise _error(f"{path}: rdf.yaml does not describe a resource")

    def read(self, name: str) -> bytes:
        if "://" in name:
            raise _error(
                f"{self.path}: '{name}' is a remote file; napari-unet only reads packaged "
                "files (download the full package .zip)"
            )
        try:
            if self._zip is not None:
                return self._zip.read(name)
            return (self.root / name).read_bytes()
        except (KeyError, FileNotFoundError) as exc:
            raise _error(f"{self.path}: '{name}' is missing from the package") from exc


def _architecture(pkg: _Package) -> tuple[dict, dict, str]:
    """(weights entry, UNet kwargs, callable name) of the package's pytorch_state_dict."""
    rdf = pkg.rdf
    if rdf.get("type") != "model":
        raise _error(f"{pkg.path}: a bioimage.io {rdf.get('type')!r}, not a model")
    weights = rdf.get("weights") or {}
    entry = weights.get("pytorch_state_dict")
    if not entry:
        found = ", ".join(weights) or "none"
        raise _error(
            f"{pkg.path}: no pytorch_state_dict weights (has: {found}); napari-unet needs "
            "them to predict and fine-tune"
        )
    arch = entry.get("architecture")
    if isinstance(arch, str):  # format 0.4: "file.py:Callable" or "module.Callable"
        source, _, callable_name = arch.rpartition(":")
        if not source:
            source, _, callable_name = arch.rpartition(".")
        kwargs = entry.get("kwargs") or {}
    else:
        arch = arch or {}
        callable_name = str(arch.get("callable", ""))
        source = arch.get("source") or arch.get("import_from") or ""
        kwargs = arch.get("kwargs") or {}
    library = "import_from" in (arch if isinstance(arch, dict) else {})
    if callable_name not in KNOWN_CALLABLES or (library and source != KNOWN_LIBRARY):
        raise _error(
            f"{pkg.path}: unknown architecture '{callable_name}' from '{source}'; napari-unet "
            f"can use only its own U-Net ({' or '.join(KNOWN_CALLABLES)})"
        )
    return entry, dict(kwargs), callable_name


def _percentiles(rdf: dict) -> list[float] | None:
    """The scale_range percentiles of the first input, or None when it has other steps."""
    steps = (rdf.get("inputs") or [{}])[0].get("preprocessing") or []
    for step in steps:
        name = step.get("id") or step.get("name")
        if name == "scale_range":
            kw = step.get("kwargs") or {}
            return [float(kw.get("min_percentile", 0.0)), float(kw.get("max_percentile", 100.0))]
        if name != "ensure_dtype":
            return None
    return None


def read_package_metadata(path: str | Path) -> dict[str, Any]:
    """A package's model metadata (as `checkpoint.read_metadata` gives) without its weights."""
    pkg = _Package(Path(path))
    _, kwargs, _ = _architecture(pkg)
    return _metadata(pkg, kwargs)


def _metadata(pkg: _Package, kwargs: dict) -> dict[str, Any]:
    from napari_unet.core.checkpoint import default_metadata
    from napari_unet.core.model import UNet

    try:
        net = UNet(**kwargs)
    except (TypeError, InputError) as exc:
        raise _error(
            f"{pkg.path}: the architecture's kwargs {kwargs} do not fit napari-unet's UNet ({exc})"
        ) from exc
    stored = (pkg.rdf.get("config") or {}).get("napari_unet")
    meta = {**default_metadata(net), **(stored if isinstance(stored, dict) else {})}
    if not isinstance(stored, dict):
        percentiles = _percentiles(pkg.rdf)
        if percentiles is None:
            raise _error(
                f"{pkg.path}: its input preprocessing is not percentile scaling (scale_range), "
                "which is the only normalisation napari-unet applies"
            )
        meta["normalisation"] = {"percentiles": percentiles}
    meta["architecture"] = dict(net.config)
    meta["package"] = {"name": pkg.rdf.get("name"), "path": str(pkg.path)}
    return meta


def load_package(path: str | Path, device: Any = "cpu") -> tuple[Any, dict[str, Any]]:
    """The package's U-Net (plain `UNet`, eval mode, on ``device``) and its metadata.

    Raises `CheckpointError` with one line saying why a package cannot be used.
    """
    import torch

    from napari_unet.core.model import UNet

    pkg = _Package(Path(path))
    entry, kwargs, _ = _architecture(pkg)
    meta = _metadata(pkg, kwargs)
    source = str(entry.get("source", ""))
    data = pkg.read(source)
    expected = entry.get("sha256")
    if expected and hashlib.sha256(data).hexdigest() != str(expected).lower():
        raise _error(
            f"{pkg.path}: weights file '{source}' does not match its sha256 in rdf.yaml "
            "(damaged or changed after export)"
        )
    net = UNet(**meta["architecture"])
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        net.load_state_dict(state, strict=True)
    except Exception as exc:  # pickle errors, wrong names or shapes
        raise _error(
            f"{pkg.path}: weights '{source}' do not fit the U-Net {kwargs} "
            f"({str(exc).splitlines()[0]})"
        ) from exc
    return net.to(device).eval(), meta
