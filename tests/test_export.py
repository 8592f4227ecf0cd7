"""bioimage.io packages: written, validated and test-run offline; read back exactly; refused
with one clear line when damaged or foreign."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from napari_unet._cli import main
from napari_unet.core import checkpoint, export, predict, tiling
from napari_unet.core.checkpoint import CheckpointError
from napari_unet.core.events import run_to_end
from napari_unet.core.model import UNet, build, context_margin_px
from napari_unet.core.synthetic import touching_cells

pytest.importorskip("bioimageio.core")
onnxruntime = pytest.importorskip("onnxruntime")


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Nothing may download: any HTTP request made by bioimageio fails the test."""
    import httpx

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(httpx, "request", refuse)
    monkeypatch.setattr(httpx, "stream", refuse)
    monkeypatch.setattr(httpx.Client, "send", refuse)


def _net(seed: int = 0, **kwargs) -> UNet:
    torch.manual_seed(seed)
    return UNet(**{"base_channels": 4, "depth": 3, "dropout": 0.1, **kwargs}).eval()


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    """A small valid-padding U-Net exported without the (slow) bioimageio test run."""
    net = _net(n_classes=3)
    meta = {"training": {"steps": 7}, "validation": {"iou": 0.5}}
    path = tmp_path_factory.mktemp("pkg") / "cells.zip"
    result = run_to_end(export.export_iter(net, meta, path, authors=["A. Person"], check=False))
    return net, result


def _read(path, name: str) -> bytes:
    with zipfile.ZipFile(path) as z:
        return z.read(name)


def _rdf(path) -> dict:
    return yaml.safe_load(_read(path, "rdf.yaml"))


def _architecture_module(path):
    """The package's architecture file imported on its own (not from napari_unet)."""
    folder = Path(tempfile.mkdtemp())
    source = folder / "exported_unet.py"
    source.write_bytes(_read(path, export.ARCHITECTURE_FILE))
    spec = importlib.util.spec_from_file_location("exported_unet", source)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _normalised_input(path) -> np.ndarray:
    """The test input scaled as scale_range says, computed here with np.percentile."""
    x = np.load(io.BytesIO(_read(path, "test_input.npy")))
    lo = np.percentile(x, 1.0, axis=(2, 3), keepdims=True)
    hi = np.percentile(x, 99.8, axis=(2, 3), keepdims=True)
    return ((x - lo) / (hi - lo)).astype(np.float32)


def test_rdf_describes_the_model_cites_the_paper_and_validates(package):
    net, result = package
    rdf = _rdf(result.path)
    assert result.weight_formats == ["pytorch_state_dict", "torchscript", "onnx"]
    assert rdf["type"] == "model" and rdf["format_version"].startswith("0.5")
    assert any(c.get("doi") == "10.1007/978-3-319-24574-4_28" for c in rdf["cite"])
    assert any("napari-unet" in c["text"] for c in rdf["cite"])
    assert rdf["authors"] == [{"name": "A. Person"}] and rdf["license"] == "CC-BY-4.0"
    assert "unet" in rdf["tags"]
    names = set(zipfile.ZipFile(result.path).namelist())
    assert {"cover.png", "README.md", "weights.pt", "weights_torchscript.pt", "weights.onnx"} <= names  # fmt: skip
    assert "Ronneberger" in _read(result.path, "README.md").decode()
    steps = {step["id"]: step for step in rdf["inputs"][0]["preprocessing"]}
    assert set(steps) <= {"scale_range", "ensure_dtype"}
    pre = steps["scale_range"]
    assert (pre["kwargs"]["min_percentile"], pre["kwargs"]["max_percentile"]) == (1.0, 99.8)
    assert [s["id"] for s in rdf["outputs"][0]["postprocessing"]][0] == "softmax"
    channels = [a for a in rdf["outputs"][0]["axes"] if a["type"] == "channel"][0]
    assert channels["channel_names"] == ["background", "cell", "border"]
    arch = rdf["weights"]["pytorch_state_dict"]["architecture"]
    assert arch["callable"] == "MirroredUNet" and arch["kwargs"] == net.config
    assert rdf["config"]["napari_unet"]["training"] == {"steps": 7}
    from bioimageio.spec import InvalidDescr, load_description

    with export.offline():
        assert not isinstance(load_description(result.path), InvalidDescr)


def test_axis_sizes_are_the_ones_the_network_takes(package):
    """Every min + k*step edge runs and keeps its size; the halo covers the context."""
    net, result = package
    rdf = _rdf(result.path)
    y_in = [a for a in rdf["inputs"][0]["axes"] if a.get("id") == "y"][0]["size"]
    y_out = [a for a in rdf["outputs"][0]["axes"] if a.get("id") == "y"][0]
    assert y_out["size"] == {"tensor_id": "raw", "axis_id": "y"}
    assert y_in["step"] == 2 ** (net.depth - 1)
    assert y_out["halo"] >= context_margin_px(net.depth)  # a kept pixel sees all its context
    assert y_in["min"] > 2 * y_out["halo"]
    mirrored = _architecture_module(result.path).MirroredUNet(**net.config).eval()
    for k in range(3):
        n = y_in["min"] + k * y_in["step"]
        with torch.no_grad():
            assert mirrored(torch.rand(1, 1, n, n + y_in["step"])).shape[-2:] == (
                n,
                n + y_in["step"],
            )


def test_architecture_file_is_self_contained_and_reproduces_the_test_output(package):
    net, result = package
    source = _read(result.path, export.ARCHITECTURE_FILE).decode()
    assert "import napari_unet" not in source and "from napari_unet" not in source
    module = _architecture_module(result.path)
    arch = module.MirroredUNet(**net.config)
    arch.load_state_dict(torch.load(io.BytesIO(_read(result.path, "weights.pt")), weights_only=True))  # fmt: skip
    with torch.no_grad():
        out = torch.softmax(arch.eval()(torch.from_numpy(_normalised_input(result.path))), 1)
    expected = np.load(io.BytesIO(_read(result.path, "test_output.npy")))
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-5)


def test_torchscript_and_onnx_equal_pytorch(package, tmp_path):
    net, result = package
    reference = _architecture_module(result.path).MirroredUNet(**net.config).eval()
    reference.load_state_dict(net.state_dict())
    (tmp_path / "m.onnx").write_bytes(_read(result.path, "weights.onnx"))
    session = onnxruntime.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])  # fmt: skip
    scripted = torch.jit.load(io.BytesIO(_read(result.path, "weights_torchscript.pt")))
    x = _normalised_input(result.path)
    other = np.random.default_rng(0).random((2, 1, 96, 112), dtype=np.float32)  # other size
    for inputs in (x, other):
        with torch.no_grad():
            expected = reference(torch.from_numpy(inputs)).numpy()
            got_ts = scripted(torch.from_numpy(inputs)).numpy()
        (got_onnx,) = session.run(None, {"raw": inputs})
        assert np.abs(got_ts - expected).max() <= 1e-4
        assert np.abs(got_onnx - expected).max() <= 1e-4


def test_reimport_gives_identical_predictions(package, tmp_path):
    net, result = package
    image = touching_cells((90, 130), seed=2)[0]
    loaded, meta = checkpoint.load(result.path)
    assert loaded.config == net.config and isinstance(loaded, UNet)
    assert meta["normalisation"]["percentiles"] == [1.0, 99.8]
    assert meta["classes"] == ["background", "cell", "border"]
    assert checkpoint.read_metadata(result.path)["architecture"] == net.config
    config = predict.PredictConfig(device="cpu")
    ours = run_to_end(predict.predict_stack(net, {}, image, config, keep_foreground=True))
    again = run_to_end(predict.predict_stack(loaded, meta, image, config, keep_foreground=True))
    assert np.array_equal(ours.foreground, again.foreground)
    assert np.array_equal(ours.labels, again.labels)
    folder = tmp_path / "unzipped"
    zipfile.ZipFile(result.path).extractall(folder)
    from_folder, _ = checkpoint.load(folder)
    from_yaml, _ = checkpoint.load(folder / "rdf.yaml")
    for other in (from_folder, from_yaml):
        assert all(torch.equal(a, b) for a, b in zip(other.state_dict().values(), net.state_dict().values(), strict=True))  # fmt: skip


def _tamper(src, dst, drop=(), replace=None, rdf_edit=None):
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for name in zin.namelist():
            if name in drop:
                continue
            data = zin.read(name)
            if replace and name in replace:
                data = replace[name](data)
            if name == "rdf.yaml" and rdf_edit:
                rdf = yaml.safe_load(data)
                rdf_edit(rdf)
                data = yaml.safe_dump(rdf).encode()
            zout.writestr(name, data)
    return dst


def _set_callable(rdf):
    rdf["weights"]["pytorch_state_dict"]["architecture"]["callable"] = "ResNet50"


def _drop_state_dict(rdf):
    del rdf["weights"]["pytorch_state_dict"]


def _foreign_preprocessing(rdf):
    del rdf["config"]
    rdf["inputs"][0]["preprocessing"] = [{"id": "zero_mean_unit_variance", "kwargs": {}}]


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ({"drop": ["weights.pt"]}, "'weights.pt' is missing from the package"),
        (
            {"replace": {"weights.pt": lambda b: b[:-9] + b"tampered!"}},
            "does not match its sha256",
        ),  # fmt: skip
        ({"rdf_edit": _set_callable}, "unknown architecture 'ResNet50'"),
        ({"rdf_edit": _drop_state_dict}, "no pytorch_state_dict weights"),
        ({"rdf_edit": _foreign_preprocessing}, "not percentile scaling"),
        ({"drop": ["rdf.yaml"]}, "not a bioimage.io package"),
    ],
)
def test_unusable_package_says_why_in_one_line(package, tmp_path, how, message):
    _, result = package
    bad = _tamper(result.path, tmp_path / "bad.zip", **how)
    with pytest.raises(CheckpointError, match=message) as info:
        checkpoint.load(bad)
    assert "\n" not in str(info.value)


def test_a_foreign_package_of_this_unet_loads_with_its_percentiles(package, tmp_path):
    """No napari-unet config, callable UNet, own percentiles: still usable."""
    net, result = package

    def as_foreign(rdf):
        del rdf["config"]
        rdf["weights"]["pytorch_state_dict"]["architecture"]["callable"] = "UNet"
        (scale,) = [s for s in rdf["inputs"][0]["preprocessing"] if s["id"] == "scale_range"]
        scale["kwargs"].update(min_percentile=2.0, max_percentile=99.0)

    loaded, meta = checkpoint.load(_tamper(result.path, tmp_path / "f.zip", rdf_edit=as_foreign))
    assert loaded.config == net.config and meta["normalisation"]["percentiles"] == [2.0, 99.0]


def test_cli_export_and_predict_with_the_package(tmp_path, capsys):
    model = checkpoint.save(tmp_path / "m.safetensors", _net(seed=4))
    out = tmp_path / "shared.zip"
    assert main(["export", str(model), "-o", str(out), "--no-check", "--no-onnx"]) == 0
    assert "saved" in capsys.readouterr().err
    assert sorted(_rdf(out)["weights"]) == ["pytorch_state_dict", "torchscript"]
    image = touching_cells((70, 80), seed=1)[0]
    np.save(tmp_path / "img.npy", image)
    for source in (model, out):
        assert main(["predict", str(source), str(tmp_path / "img.npy"), "-o", str(tmp_path / f"{source.suffix}.npy")]) == 0  # fmt: skip
    assert np.array_equal(np.load(tmp_path / ".safetensors.npy"), np.load(tmp_path / ".zip.npy"))


def test_cli_export_refuses_bad_input_with_exit_code_2(tmp_path, capsys):
    model = checkpoint.save(tmp_path / "m.safetensors", _net())
    assert main(["export", str(tmp_path / "nope.safetensors"), "-o", str(tmp_path / "a.zip")]) == 2  # fmt: skip
    assert "no such model file" in capsys.readouterr().err
    assert main(["export", str(model), "-o", str(tmp_path / "a.tar")]) == 2
    assert ".zip" in capsys.readouterr().err
    assert not (tmp_path / "a.zip").exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kind", "channels", "padding"),
    [("light", 1, "valid"), ("light", 3, "same"), ("paper", 1, "valid")],
)
def test_bioimageio_core_test_run_passes(tmp_path, kind, channels, padding):
    """Official validation + bioimageio.core's model test (every weight format), offline.
    The paper architecture (5 levels, dropout 0.5) at base width 8 to stay fast."""
    torch.manual_seed(1)
    width = {} if kind == "light" else {"base_channels": 8}
    net = build(kind, in_channels=channels, padding=padding, **width)
    result = run_to_end(export.export_iter(net, {}, tmp_path / f"{kind}.zip"))
    assert result.test_status == "passed"  # else export raises and removes the package
    assert result.weight_formats == ["pytorch_state_dict", "torchscript", "onnx"]
    assert result.path.is_file()


@pytest.mark.slow
def test_bioimageio_halo_tiling_equals_napari_unet_prediction(package):
    """A consumer tiling with the package's halo (bioimageio.core, blocks of two sizes)
    gets napari-unet's seamless prediction; a wrong pooling phase would differ by ~0.5."""
    from bioimageio.core import load_model_description
    from bioimageio.core import predict as bioimageio_predict

    net, result = package
    image = (touching_cells((136, 112), seed=5)[0] * 1000).astype(np.float32)
    from napari_unet.core.normalize import normalize

    ours = tiling.predict_tiled(net, normalize(image)[None], device="cpu")
    with export.offline():
        descr = load_model_description(result.path)
        whole = bioimageio_predict(
            model=descr, inputs=normalize(image)[None, None], skip_preprocessing=True
        )
        assert np.abs(whole.members["probabilities"].data.values[0] - ours).max() < 1e-3
        for blocks in (1, 3):  # 96 and 112 px tiles
            sample = bioimageio_predict(
                model=descr, inputs=image[None, None], blocksize_parameter=blocks
            )
            theirs = sample.members["probabilities"].data.values[0]
            assert theirs.shape == ours.shape
            # bioimageio.core's percentiles differ a little from napari-unet's
            assert np.abs(theirs - ours).max() < 0.05


def test_export_needs_a_zip_name(tmp_path):
    with pytest.raises(ValueError, match=r"\.zip"):
        run_to_end(export.export_iter(_net(), {}, tmp_path / "x.safetensors"))


def test_weights_hash_in_rdf_is_the_file_hash(package):
    _, result = package
    entry = _rdf(result.path)["weights"]["pytorch_state_dict"]
    assert entry["sha256"] == hashlib.sha256(_read(result.path, "weights.pt")).hexdigest()


def test_cover_is_a_two_to_one_picture_of_the_prediction(package):
    import imageio.v3 as iio

    _, result = package
    cover = iio.imread(_read(result.path, "cover.png"))
    assert cover.ndim == 3 and cover.shape[1] == 2 * cover.shape[0]
    assert cover[:, cover.shape[1] // 2 :].std() > 0  # the prediction half is not blank
