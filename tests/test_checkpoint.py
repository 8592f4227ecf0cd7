"""Model files round-trip exactly and refuse corrupt or foreign files with clear messages."""

from __future__ import annotations

import json

import pytest
import torch

from napari_unet.core.checkpoint import CheckpointError, load, read_metadata, save
from napari_unet.core.device import autocast, free_memory_bytes, resolve_device
from napari_unet.core.io import InputError
from napari_unet.core.model import UNet


@pytest.fixture
def small_net() -> UNet:
    torch.manual_seed(3)
    return UNet(base_channels=4, depth=3, n_classes=3, dropout=0.2)


def test_round_trip_gives_identical_outputs_and_metadata(tmp_path, small_net):
    path = save(
        tmp_path / "cells.safetensors",
        small_net,
        {"training": {"steps": 12, "history": [[1, 0.7]]}, "validation": {"iou": 0.81}},
    )
    net, meta = load(path)
    assert not net.training
    assert net.config == small_net.config
    x = torch.rand(2, 1, 60, 60)
    with torch.no_grad():
        assert torch.equal(net(x), small_net.eval()(x))
    assert meta["architecture"] == small_net.config
    assert meta["classes"] == ["background", "cell", "border"]
    assert meta["normalisation"]["percentiles"] == [1.0, 99.8]
    assert meta["training"] == {"steps": 12, "history": [[1, 0.7]]}
    assert meta["validation"] == {"iou": 0.81}
    assert meta["version"]
    assert read_metadata(path) == meta
    assert [p.name for p in tmp_path.iterdir()] == ["cells.safetensors"]  # no temp file left


def test_save_replaces_an_existing_file_atomically(tmp_path, small_net):
    path = tmp_path / "m.safetensors"
    save(path, UNet(base_channels=2, depth=2))
    save(path, small_net)
    assert load(path)[0].config == small_net.config


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="no such model file"):
        load(tmp_path / "nope.safetensors")


def test_corrupt_file_gives_a_clear_error(tmp_path, small_net):
    path = save(tmp_path / "m.safetensors", small_net)
    data = path.read_bytes()
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated.safetensors: .*(corrupt|damaged)"):
        load(truncated)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00\x01 not a model at all" * 10)
    with pytest.raises(CheckpointError, match="corrupt or not safetensors"):
        load(garbage)
    assert issubclass(CheckpointError, InputError)  # the CLI turns it into exit code 2


def test_foreign_safetensors_file_is_refused(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(3)}, str(path), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="not a napari-unet model"):
        load(path)


def test_weights_that_do_not_fit_the_architecture(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "mismatch.safetensors"
    meta = {"architecture": UNet(base_channels=4, depth=2).config}
    save_file({"w": torch.zeros(3)}, str(path), metadata={"napari_unet": json.dumps(meta)})
    with pytest.raises(CheckpointError, match="damaged or incomplete"):
        load(path)


def test_device_helpers():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    with pytest.raises(InputError, match="Unknown device 'tpu'"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="no CUDA GPU"):
            resolve_device("cuda")
    assert free_memory_bytes("cpu") > 0
    with autocast("cpu"):
        assert torch.ones(2, 2).matmul(torch.ones(2, 2)).dtype == torch.float32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_autocast_is_bf16_and_load_to_cuda(tmp_path, small_net):
    with autocast("cuda"):
        assert torch.ones(2, 2, device="cuda").matmul(torch.ones(2, 2, device="cuda")).dtype == (
            torch.bfloat16
        )
    net, _ = load(save(tmp_path / "m.safetensors", small_net), device="cuda")
    assert next(net.parameters()).device.type == "cuda"


def test_saved_model_is_readable_by_others_as_the_umask_allows(tmp_path, small_net):
    import os
    import stat

    umask = os.umask(0o022)
    try:
        path = save(tmp_path / "shared.safetensors", small_net, {})
    finally:
        os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_resume_state_round_trips_optimizer_momentum_without_pickle(tmp_path):
    from napari_unet.core import checkpoint

    torch.manual_seed(0)
    net = UNet(base_channels=4, depth=2, padding="same", dropout=0.0)
    x = torch.rand(1, 1, 16, 16)
    for make in (
        lambda p: torch.optim.AdamW(p, lr=1e-3),
        lambda p: torch.optim.SGD(p, lr=1e-2, momentum=0.99),
    ):
        optimizer = make(net.parameters())
        for _ in range(2):
            optimizer.zero_grad()
            net(x).square().mean().backward()
            optimizer.step()
        path = checkpoint.save_resume(
            checkpoint.resume_path(tmp_path / "m.safetensors"),
            net.state_dict(),
            optimizer.state_dict(),
            {"steps_done": 2},
        )
        assert path.name == "m.resume.safetensors"
        assert b"pickle" not in path.read_bytes()[:8] and path.read_bytes()[8:9] == b"{"
        weights, state, info, anchor = checkpoint.load_resume(path)
        assert info == {"steps_done": 2} and anchor == {}
        twin = UNet(base_channels=4, depth=2, padding="same", dropout=0.0)
        twin.load_state_dict(weights)
        again = make(twin.parameters())
        again.load_state_dict(state)
        # one more identical step on both: identical weights only if the momentum came back
        for o, n in ((optimizer, net), (again, twin)):
            o.zero_grad()
            n(x).square().mean().backward()
            o.step()
        for a, b in zip(net.parameters(), twin.parameters(), strict=True):
            torch.testing.assert_close(a, b)
